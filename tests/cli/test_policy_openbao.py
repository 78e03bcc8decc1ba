"""``glue policy openbao``: the OpenBao policy (HCL) the enabled routes need, from the paths each
OpenBao handler declares, filled in from the route's params (a value from the event is a glob)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glue import cli

CONFIG = """
clients:
  openbao:
    address: https://openbao.example:8200
    auth: {method: kubernetes, role: runtime-glue}
    ledger: {mount: kv, prefix: glue/ledger}
routes:
  - name: rotate-db
    handler: openbao.kv.rotate
    params: {path: apps/db}
  - name: rotate-any
    handler: openbao.kv.rotate
    params: {mount: team, path: "{{ data.path }}"}
  - name: transit
    handler: openbao.transit.rotate
    params: {key: "{{ data.key }}"}
  - name: disabled-rotation
    enabled: false
    handler: openbao.database.rotate-role
    params: {role: app}
"""


def policy(text: str) -> dict[str, list[str]]:
    """path -> capabilities, parsed from the HCL."""
    found = re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}', text)
    return {path: re.findall(r'"([^"]+)"', caps) for path, caps in found}


def test_policy_names_each_path_with_its_capabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "glue.yaml"
    config.write_text(CONFIG)
    assert cli.main(["policy", "openbao", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert policy(out) == {
        "kv/data/glue/ledger/*": ["create", "read", "update"],
        "secret/data/apps/db": ["create", "read", "update"],
        "secret/metadata/apps/db": ["create", "read", "update"],
        "team/data/*": ["create", "read", "update"],
        "team/metadata/*": ["create", "read", "update"],
        "transit/keys/*": ["read"],
        "transit/keys/+/rotate": ["update"],
    }
    assert '# routes: rotate-db\npath "secret/data/apps/db"' in out
    assert "rotate-role" not in out  # the disabled route needs nothing


def test_no_openbao_route_needs_no_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "glue.yaml"
    config.write_text("routes: [{name: a, handler: log}]\n")
    assert cli.main(["policy", "openbao", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "# the configured routes need no OpenBao policy\n"
