"""Print the chart's ``rbac.handlerRules`` block from the rules the registered handlers declare.

    .venv/bin/python -m tests.deploy.handler_rules

Paste the output under ``rbac.handlerRules`` in charts/runtime-glue/values.yaml after adding a handler
(tests/deploy fails until the chart knows every handler, and checks the rules against ``glue rbac``).
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
            if rule.cancel_only:
                values["cancelOnly"] = True
            rules[name].setdefault(scope, []).append(values)
    return rules


if __name__ == "__main__":
    text = yaml.safe_dump(handler_rules(), sort_keys=False, default_flow_style=None, width=200)
    print("\n".join("    " + line for line in text.splitlines()))
