"""Print the chart's ``rbac.handlerRules`` block from the rules the registered handlers declare, and
with ``--openbao`` its ``rbac.openbaoPaths`` block (the OpenBao paths they call).

    .venv/bin/python -m tests.deploy.handler_rules [--openbao]

Paste the output under ``rbac.handlerRules`` (``rbac.openbaoPaths``) in charts/runtime-glue/values.yaml
after adding a handler (tests/deploy fails until the chart knows every handler, and checks the rules
against ``glue rbac`` and the policy in the chart's notes against ``glue policy openbao``).
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.conftest import registered_handlers


def handler_rules() -> dict[str, dict[str, list[dict[str, Any]]]]:
    rules: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, entry in sorted(registered_handlers().items()):
        rules[name] = {}
        for rule in entry.rbac:
            scope = "cluster" if rule.cluster_scoped else "namespaced"
            values = rule.to_dict()
            if rule.narrow_by is not None:
                param, default, choices = rule.narrow_by
                values["narrowBy"] = {"param": param, "default": default, "resources": dict(choices)}
            if rule.each is not None:
                values["each"] = rule.each
            if rule.cancel_only:
                values["cancelOnly"] = True
            rules[name].setdefault(scope, []).append(values)
    return rules


def openbao_paths() -> dict[str, dict[str, Any]]:
    """Per OpenBao handler: the paths it calls with their capabilities, and the text defaults of its
    params (what a path's ``{name}`` is when a route does not set it), as glue.rbac.openbao_paths
    reads them."""
    found: dict[str, dict[str, Any]] = {}
    for name, entry in sorted(registered_handlers().items()):
        if not entry.openbao:
            continue
        defaults = {}
        for field, info in entry.params.model_fields.items():
            assert info.alias in (None, field), f"{name}.{field}: the chart looks params up by field name"
            if not info.is_required() and isinstance(info.default, str):
                defaults[field] = info.default
        found[name] = {"defaults": defaults, "paths": [path.to_dict() for path in entry.openbao]}
    return found


if __name__ == "__main__":
    import sys

    block = openbao_paths() if "--openbao" in sys.argv else handler_rules()
    text = yaml.safe_dump(block, sort_keys=False, default_flow_style=None, width=200)
    print("\n".join("    " + line for line in text.splitlines()))
