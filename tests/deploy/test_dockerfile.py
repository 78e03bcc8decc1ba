"""The container image, without a Docker engine: hadolint on the Dockerfile, the Dockerfile's promises
(stages, user, entrypoint, writable paths) against the chart that runs it, and the wheel the builder stage
installs, built from exactly the files the Dockerfile copies and run in a fresh virtual environment.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import helm_python as helm
import pytest
from packaging.requirements import Requirement

from glue import settings
from tests.deploy.conftest import ROOT, one, render

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def test_hadolint_passes() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_would_catch_a_careless_image(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nCMD glue run\n")
    codes = {finding["code"] for finding in hadolint(careless)}
    assert {"DL3007", "DL3008", "DL3025"} <= codes  # :latest, unpinned apt package, shell-form CMD


def test_image_is_multi_stage_slim_and_unprivileged() -> None:
    builder, final = stages(DOCKERFILE.read_text())
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in instructions(DOCKERFILE.read_text())
    final_text = " ".join(args for _, args in final)
    for tool in ("gcc", "build-essential", "pip install", "COPY glue", "COPY handlers"):
        assert tool not in final_text, f"the final stage has {tool!r}"
    assert ("COPY", "--from=builder /opt/glue /opt/glue") in final
    users = [args for keyword, args in final if keyword == "USER"]
    assert users == ["10001:10001"]
    assert ("ENTRYPOINT", '["glue"]') in final
    assert ("CMD", '["run", "--config", "/etc/glue/config.yaml"]') in final
    assert ("VOLUME", '["/var/lib/glue"]') in final


def test_chart_runs_the_image_as_the_image_expects(chart: helm.Chart) -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    uid, gid = (int(part) for part in next(args for keyword, args in final if keyword == "USER").split(":"))
    spec = one(render(chart), "Deployment")["spec"]["template"]["spec"]
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (uid, gid)
    (container,) = spec["containers"]
    assert container["args"] == json.loads(next(args for keyword, args in final if keyword == "CMD"))
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/var/lib/glue", "/etc/glue", "/tmp"}
    expose = next(args for keyword, args in final if keyword == "EXPOSE")
    assert container["ports"][0]["containerPort"] == int(expose)


def run_examples(text: str) -> list[list[str]]:
    """The ``docker run`` commands of the Dockerfile's header comment, continuation lines joined."""
    header = "\n".join(line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#"))
    joined = header.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("docker run")]


def test_docker_run_example_publishes_the_port_the_default_config_listens_on() -> None:
    """Without a Docker engine: each example publishes the exposed port, and the image's default config
    (what the final stage copies to /etc/glue/config.yaml) listens there on every interface, with its
    journal on the image's volume."""
    text = DOCKERFILE.read_text()
    final = stages(text)[-1]
    expose = int(next(args for keyword, args in final if keyword == "EXPOSE"))
    examples = run_examples(text)
    assert examples
    for argv in examples:
        assert argv[argv.index("-p") + 1] == f"{expose}:{expose}"
        assert "--read-only" in argv and "glue-data:/var/lib/glue" in argv
    [copied] = [
        args for keyword, args in final if keyword == "COPY" and args.endswith(" /etc/glue/config.yaml")
    ]
    source = copied.split()[1].removeprefix("/src/")
    [context_path] = [s for s in copied_sources() if Path(s).name == source]
    loaded = settings.load(ROOT / context_path)
    assert (loaded.server.host, loaded.server.port) == ("0.0.0.0", expose)
    assert loaded.journal.path.parent == Path("/var/lib/glue")


def copied_sources() -> list[str]:
    """What the builder stage copies from the build context."""
    builder = stages(DOCKERFILE.read_text())[0]
    sources: list[str] = []
    for keyword, args in builder:
        if keyword == "COPY" and not args.startswith("--from"):
            sources.extend(args.split()[:-1])
    return sources


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert included == set(copied_sources())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the builder stage builds, from a context holding only what the Dockerfile copies."""
    context = tmp_path_factory.mktemp("context")
    for source in copied_sources():
        path = ROOT / source
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=ignore)
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / source)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(out),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("runtime_glue-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_the_packages_and_declares_the_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        entry_points = archive.read(metadata_name.replace("METADATA", "entry_points.txt")).decode()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"glue", "handlers"}
    assert "glue/journal/sqlite/__init__.py" in names and "handlers/kubernetes.py" in names
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {str(Requirement(r)) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r}
    assert declared == {str(Requirement(r)) for r in project["dependencies"]}
    assert "glue = glue.cli:main" in entry_points


@pytest.mark.slow
def test_wheel_runs_glue_help_in_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel as the Dockerfile does (a venv without pip, installed from outside it).

    The fresh environment gets the wheel only; the third-party dependencies it declares (checked above)
    are lent from the test environment on PYTHONPATH, which does not process .pth files, so this
    checkout's editable install cannot stand in for the wheel.
    """
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    env = {"PATH": f"{fresh / 'bin'}:/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    result = subprocess.run(
        [str(fresh / "bin" / "glue"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: glue")
    for command in ("run", "check", "decode", "events"):
        assert command in result.stdout
    where = subprocess.run(
        [str(python), "-c", "import glue, handlers; print(glue.__file__); print(handlers.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert all(line.startswith(str(fresh)) for line in where.stdout.split()), where.stdout
