"""values.schema.json against the daemon's settings model (glue/settings.py): every setting an operator may
write under ``config`` (and ``journal.settings``) has a schema entry with the same constraints, and the
schema offers no key the daemon would reject. A setting added to the daemon without its chart entry fails
here, naming it.

The model's side is pydantic's own JSON Schema of :class:`glue.settings.Settings`; the chart may be
stricter (absolute file paths, host:port lists) but never looser or different.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from glue import settings

GENERATED: dict[str, Any] = settings.Settings.model_json_schema(by_alias=True)

#: Constraints that must agree where the model states them.
CONSTRAINTS = (
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
)

#: Settings the chart sets itself or keeps out of values on purpose, and why.
NOT_IN_VALUES = {
    "config.server.host": "the chart sets it from listenAddress",
    "config.server.port": "the chart sets it from containerPort",
    "config.server.tls": "the chart sets it from tls (the Secret it mounts)",
    "config.journal": "the chart manages it: journal.backend, journal.postgres and journal.settings",
    "config.execution.owner": "replicas of one Deployment would share it; each pod names itself",
    "journal.settings.backend": "journal.backend",
    "journal.settings.path": "the chart puts the SQLite file on its volume",
    "journal.settings.dsn": "journal.postgres.dsnSecret",
}
#: A secretRef's inline value is for local tests only; values never hold a secret.
SECRET_REF_VALUE = "value"


def model_node(node: dict[str, Any]) -> dict[str, Any]:
    """A node of the generated schema with references resolved and ``X | None`` unwrapped."""
    if "$ref" in node:
        return model_node(GENERATED["$defs"][node["$ref"].rsplit("/", 1)[1]])
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        return model_node(options[0])
    return node


def chart_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return chart_node(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    return node


def differences(
    schema: dict[str, Any], model: dict[str, Any], chart: dict[str, Any], where: str
) -> list[str]:
    """Where the chart's schema node disagrees with the model's, one line each."""
    model, chart = model_node(model), chart_node(schema, chart)
    found: list[str] = []
    if "type" in model and "enum" not in chart:
        types = chart.get("type")
        if model["type"] != types and model["type"] not in (types if isinstance(types, list) else []):
            found.append(f"{where}: type {types!r}, the daemon expects {model['type']!r}")
    for key in CONSTRAINTS:
        if key in model and chart.get(key) != model[key]:
            found.append(f"{where}: {key} {chart.get(key)!r}, the daemon has {model[key]!r}")
    if "properties" in model:
        secret_ref = model.get("title") == "SecretRef"
        wanted = {
            name
            for name in model["properties"]
            if f"{where}.{name}" not in NOT_IN_VALUES and not (secret_ref and name == SECRET_REF_VALUE)
        }
        offered = set(chart.get("properties", {}))
        found += [f"{where}.{name}: a setting the schema does not offer" for name in sorted(wanted - offered)]
        found += [f"{where}.{name}: not a setting values may hold" for name in sorted(offered - wanted)]
        if model.get("additionalProperties") is False and chart.get("additionalProperties") is not False:
            found.append(f"{where}: the daemon rejects unknown keys, the schema lets them through")
        required, chart_required = set(model.get("required", [])) & wanted, set(chart.get("required", []))
        if required != chart_required:
            found.append(f"{where}: required {sorted(chart_required)}, the daemon {sorted(required)}")
        for name in sorted(wanted & offered):
            model_property, chart_property = model["properties"][name], chart["properties"][name]
            found += differences(schema, model_property, chart_property, f"{where}.{name}")
    if "items" in model:
        found += differences(schema, model["items"], chart.get("items", {}), f"{where}[]")
    return found


def test_values_schema_mirrors_the_settings_model(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    config = schema["properties"]["config"]
    # config.journal stays in the schema only so that the template can say where the setting belongs.
    offered = {**config, "properties": {k: v for k, v in config["properties"].items() if k != "journal"}}
    found = differences(schema, GENERATED, offered, "config")
    journal_settings = schema["properties"]["journal"]["properties"]["settings"]
    found += differences(schema, GENERATED["$defs"]["Journal"], journal_settings, "journal.settings")
    assert found == []


def test_the_mirror_check_reports_a_missing_and_a_loosened_setting(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    minio = schema["properties"]["config"]["properties"]["sources"]["properties"]["minio"]
    broken = {**minio, "properties": {k: v for k, v in minio["properties"].items() if k != "pingSeconds"}}
    broken["properties"]["timeout"] = {"type": "number"}
    found = differences(schema, GENERATED["$defs"]["Minio"], broken, "config.sources.minio")
    assert sorted(found) == [
        "config.sources.minio.pingSeconds: a setting the schema does not offer",
        "config.sources.minio.timeout: exclusiveMinimum None, the daemon has 0",
        "config.sources.minio.timeout: maximum None, the daemon has 300",
    ]


@pytest.mark.parametrize("where", sorted(NOT_IN_VALUES))
def test_settings_left_out_of_values_still_exist(where: str) -> None:
    """An exemption for a setting the daemon no longer has would hide nothing; drop it instead."""
    node: dict[str, Any] = GENERATED
    parts = where.split(".")[1:]
    if where.startswith("journal.settings."):
        node, parts = GENERATED["$defs"]["Journal"], parts[1:]
    for part in parts:
        node = model_node(node)
        assert part in node["properties"], f"{where} is no longer a setting"
        node = node["properties"][part]
