# runtime-glue: `make` (= `make test`) is what CI runs.
#   make run    install the daemon into .venv and run it on the embedded default (SQLite journal)
#   make test   install the test dependencies, start the services the tests use, run lint and the suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= config/glue.yaml

.DEFAULT_GOAL := test
.PHONY: run test lint services chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run

# Local placeholders for the example config's webhook secrets (it listens on 127.0.0.1 only).
# In a cluster they come from mounted Secrets; see config/glue.yaml and the Helm chart.
run: export GLUE_HARBOR_AUTH ?= local-harbor-auth
run: export GLUE_GITLAB_TOKEN ?= local-gitlab-token
run: export GLUE_MINIO_TOKEN ?= local-minio-token
run: $(VENV)/.run
	$(BIN)/glue check --config $(CONFIG)
	$(BIN)/glue run --config $(CONFIG)

# The console's browser tests drive Debian's chromium through Playwright (never `playwright install`).
chromium:
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# PostgreSQL runs on this kind of machine before a session; start it if it has stopped.
services: chromium
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL did not start" >&2; exit 1

lint: $(VENV)/.test
	$(BIN)/ruff check glue handlers tests bench
	$(BIN)/ruff format --check glue handlers tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

test: $(VENV)/.test services lint
	$(BIN)/pytest -q

bench: $(VENV)/.run
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/console.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
