"""``glue handlers [NAME]``: every handler, its parameters and what it needs of the Kubernetes API and
of OpenBao."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from glue import contract
from glue.cli import common

__all__ = ["add_commands", "describe", "param_rows"]


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON Schema node as a short type: ``string``, ``integer``, ``list of string``, ``a | b``."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        return _type(target, defs) if "enum" in target or "const" in target else name
    if "const" in node:
        return repr(node["const"]).replace("'", '"')
    if "enum" in node:
        return " | ".join(repr(value).replace("'", '"') for value in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " | ".join(_type(option, defs) for option in node[key])
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}), defs)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'], defs)}"
    return str(kind or "any")


def param_rows(entry: contract.Handler) -> list[dict[str, Any]]:
    """One row per parameter: name (as written in a route), type, required, default, description."""
    schema = entry.params.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    rows = []
    for name, node in schema.get("properties", {}).items():
        rows.append(
            {
                "name": name,
                "type": _type(node, defs),
                "required": name in required,
                "default": node.get("default"),
                "description": node.get("description", ""),
            }
        )
    return rows


def describe(entry: contract.Handler) -> dict[str, Any]:
    """A handler as ``glue handlers NAME`` prints it."""
    kubernetes = [
        {
            "verbs": list(rule.verbs),
            "resources": [
                f"{group}/{r}" if group else r for group in rule.api_groups for r in rule.resources
            ],
            **({"only": "routes whose concurrencyGroup cancels"} if rule.cancel_only else {}),
        }
        for rule in entry.rbac
    ]
    return {
        "name": entry.name,
        "description": entry.description,
        "clients": list(entry.clients),
        "cancelStep": (entry.cancel.__doc__ or "").strip().split("\n")[0]
        if entry.cancel is not None
        else None,
        "params": param_rows(entry),
        "needs": {
            "kubernetes": kubernetes,
            "openbao": [path.to_dict() for path in entry.openbao],
        },
    }


def _print_one(document: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"{document['name']}: {document['description']}\n")
    if document["clients"]:
        out.write(f"clients: {', '.join(document['clients'])}\n")
    if document.get("cancelStep"):
        out.write(f"cancel step (concurrencyGroup onConflict: cancel): {document['cancelStep']}\n")
    out.write("\nparams:\n")
    if document["params"]:
        rows = [{**row, "required": "yes" if row["required"] else "no"} for row in document["params"]]
        common.emit(rows, ["name", "type", "required", "default", "description"])
    else:
        out.write("  (none)\n")
    needs = document["needs"]
    if needs["kubernetes"]:
        out.write("\nneeds of the Kubernetes API (glue rbac):\n")
        for rule in needs["kubernetes"]:
            only = f" ({rule['only']} only)" if rule.get("only") else ""
            out.write(f"  {', '.join(rule['verbs'])} on {', '.join(rule['resources'])}{only}\n")
    if needs["openbao"]:
        out.write("\nneeds of OpenBao (policy paths, {param} from the route's params):\n")
        for path in needs["openbao"]:
            out.write(f"  {path['path']}: {', '.join(path['capabilities'])}\n")


def cmd_handlers(args: argparse.Namespace) -> int:
    from glue import app

    settings = common.load_settings(args)
    app.load_plugins(settings, everything=True)
    known = contract.registry.handlers
    if args.name is None:
        rows = [
            {"name": name, "clients": ", ".join(entry.clients), "description": entry.description}
            for name, entry in sorted(known.items())
        ]
        common.emit(rows, ["name", "clients", "description"])
        return 0
    entry = known.get(args.name)
    if entry is None:
        raise common.CliError(f"unknown handler {args.name!r} (known: {', '.join(sorted(known))})")
    document = describe(entry)
    if sys.stdout.isatty():
        _print_one(document)
    else:
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("handlers", help="list the handlers, or one with its params and what it needs")
    common.config_arg(p)
    p.add_argument("name", nargs="?", metavar="NAME", help="one handler, e.g. kubernetes.restart")
    p.set_defaults(func=cmd_handlers)
