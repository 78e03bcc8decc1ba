"""The least Kubernetes RBAC a configuration needs, from the rules its handlers declare.

Every handler declares the PolicyRules it needs (``@glue.handler(..., rbac=[RbacRule(...)])``). For the
enabled routes of a configuration, :func:`grants` works out where each rule is needed:

- a route whose ``params.namespace`` is a literal (no template) needs its handler's rules in that
  namespace only: a Role there;
- a rule that names its resource by a parameter (``kubernetes.restart``'s ``kind``) grants only the
  resource a literal value names (a Deployment: ``deployments``);
- a rule needed once per item of a list parameter (an OpenBao rotation's ``restart`` workloads) is
  granted for each item as if it were a route of its own: its kind, in its literal namespace;
- a route whose namespace is rendered from the event (or that has none) may act in any namespace: its
  rules go into a ClusterRole, and so do rules a handler marks ``cluster_scoped``.

Verbs are merged per (apiGroup, resource); resources with the same verbs are grouped into one rule;
what the ClusterRole grants is not repeated in the Roles. :func:`manifests` renders the result (and,
given a service account, the bindings) as Kubernetes objects; ``glue rbac`` prints them as YAML, and the
Helm chart can render the same objects.

OpenBao handlers declare the paths they call (``openbao=[PolicyPath(...)]``); :func:`openbao_policy`
fills them in from each enabled route's params (a value rendered from the event becomes a glob) and
prints the policy in HCL, for ``glue policy openbao``.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

from glue import contract, routing
from glue import settings as settings_mod

__all__ = ["Grant", "grants", "manifests", "merge", "openbao_paths", "openbao_policy", "render"]

#: The order kubectl and the docs list verbs in; unknown verbs sort after, alphabetically.
_VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """Rules needed in one namespace, or cluster-wide when ``namespace`` is None."""

    namespace: str | None
    rules: tuple[dict[str, Any], ...]
    routes: tuple[str, ...]  # the routes that need them


def _permissions(rules: Iterable[contract.RbacRule]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
    }


def _verb_key(verb: str) -> tuple[int, str]:
    return (_VERB_ORDER.index(verb) if verb in _VERB_ORDER else len(_VERB_ORDER), verb)


def merge(permissions: Iterable[Permission]) -> list[dict[str, Any]]:
    """PolicyRules for a set of permissions: verbs merged per resource, resources with equal verbs
    grouped, in a stable order."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in permissions:
        verbs.setdefault((group, resource), set()).add(verb)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), resource_verbs in verbs.items():
        ordered = tuple(sorted(resource_verbs, key=_verb_key))
        grouped.setdefault((group, ordered), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(ordered)}
        for (group, ordered), resources in sorted(grouped.items())
    ]


def grants(routes: Iterable[routing.Compiled]) -> list[Grant]:
    """Where the enabled routes need which rules: the ClusterRole's first (if any), then per namespace."""
    cluster: set[Permission] = set()
    cluster_routes: list[str] = []
    spaced: dict[str, set[Permission]] = {}
    spaced_routes: dict[str, list[str]] = {}
    for compiled in routes:
        if not compiled.route.enabled or not compiled.handler.rbac:
            continue
        group = compiled.route.group
        cancels = group is not None and group.on_conflict == "cancel"
        anywhere = False
        for rule in compiled.handler.rbac:
            if rule.cancel_only and not cancels:
                continue  # only the cancel step needs it, and this route never cancels
            for namespace, needed in rule.targets(compiled.route.params):
                if needed.cluster_scoped or namespace is None:
                    cluster |= _permissions([needed])
                    anywhere = True
                else:
                    spaced.setdefault(namespace, set()).update(_permissions([needed]))
                    names = spaced_routes.setdefault(namespace, [])
                    if compiled.name not in names:
                        names.append(compiled.name)
        if anywhere:
            cluster_routes.append(compiled.name)
    result: list[Grant] = []
    if cluster:
        result.append(Grant(None, tuple(merge(cluster)), tuple(cluster_routes)))
    for namespace in sorted(spaced):
        remaining = spaced[namespace] - cluster
        if remaining:
            result.append(Grant(namespace, tuple(merge(remaining)), tuple(spaced_routes[namespace])))
    return result


def manifests(
    found: Iterable[Grant],
    *,
    name: str = "runtime-glue",
    service_account: tuple[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Role / ClusterRole objects for the grants; with ``service_account`` (namespace, name), bindings too."""
    objects: list[dict[str, Any]] = []
    for grant in found:
        meta: dict[str, Any] = {"name": name}
        if grant.namespace is not None:
            meta["namespace"] = grant.namespace
        if labels:
            meta["labels"] = dict(labels)
        meta["annotations"] = {"runtime-glue.io/routes": ",".join(grant.routes)}
        kind = "ClusterRole" if grant.namespace is None else "Role"
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": meta,
                "rules": list(grant.rules),
            }
        )
        if service_account is not None:
            binding_meta = {key: value for key, value in meta.items() if key != "annotations"}
            objects.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": f"{kind}Binding",
                    "metadata": binding_meta,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "namespace": service_account[0],
                            "name": service_account[1],
                        }
                    ],
                }
            )
    return objects


def render(
    settings: settings_mod.Settings,
    registry: contract.Registry,
    *,
    name: str = "runtime-glue",
    service_account: tuple[str, str] | None = None,
    source: str = "<config>",
) -> list[dict[str, Any]]:
    """The RBAC objects for a configuration's routes (handler modules must be imported already).

    Raises settings.ConfigError when the routes do not validate (unknown handler, bad parameters).
    """
    router = routing.load(settings.routes, registry, source=source)
    return manifests(grants(router.routes), name=name, service_account=service_account)


_CAPABILITY_ORDER = ("create", "read", "update", "patch", "delete", "list", "sudo")


def _templated(value: Any) -> bool:
    return not isinstance(value, str) or "{{" in value or "{%" in value


def _fill(template: str, values: Mapping[str, Any]) -> str:
    """A PolicyPath with its ``{name}`` fields filled: a value rendered from the event is ``*`` in the
    last place (any rest of the path), ``+`` before it (one segment)."""
    names = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    filled: dict[str, str] = {}
    for index, name in enumerate(names):
        value = values.get(name)
        if value is None or _templated(value):
            filled[name] = "*" if index == len(names) - 1 and template.endswith("{" + name + "}") else "+"
        else:
            filled[name] = str(value).strip("/")
    return re.sub(r"/+", "/", template.format(**filled))


def openbao_paths(routes: Iterable[routing.Compiled], ledger: str) -> dict[str, tuple[set[str], list[str]]]:
    """Path -> (capabilities, routes that need it), for the enabled routes of OpenBao handlers."""
    found: dict[str, tuple[set[str], list[str]]] = {}
    for compiled in routes:
        if not compiled.route.enabled or not compiled.handler.openbao:
            continue
        model = compiled.handler.params
        values: dict[str, Any] = {
            name: info.default
            for name, info in model.model_fields.items()
            if not info.is_required() and isinstance(info.default, str)
        }
        for name, info in model.model_fields.items():
            for key in (info.alias, name):
                if key and key in compiled.route.params:
                    values[name] = compiled.route.params[key]
        values["ledger"] = ledger
        for needed in compiled.handler.openbao:
            path = _fill(needed.path, values)
            capabilities, names = found.setdefault(path, (set(), []))
            capabilities.update(needed.capabilities)
            if compiled.name not in names:
                names.append(compiled.name)
    return found


def openbao_policy(
    settings: settings_mod.Settings, registry: contract.Registry, *, source: str = "<config>"
) -> str:
    """The OpenBao policy (HCL) the enabled routes need; empty when no route uses OpenBao."""
    router = routing.load(settings.routes, registry, source=source)
    raw = settings.clients.get("openbao", {}).get("ledger", {})
    ledger = f"{raw.get('mount', 'secret')}/data/{raw.get('prefix', 'runtime-glue/rotations')}"
    found = openbao_paths(router.routes, ledger)
    if not found:
        return ""
    blocks = [
        "# The OpenBao policy the routes need (glue policy openbao). The token also uses the default\n"
        "# policy's auth/token/lookup-self, renew-self and revoke-self."
    ]
    for path in sorted(found):
        capabilities, names = found[path]
        ordered = sorted(capabilities, key=lambda c: (*_CAPABILITY_ORDER, c).index(c))
        quoted = ", ".join(f'"{c}"' for c in ordered)
        blocks.append(f'# routes: {", ".join(names)}\npath "{path}" {{\n  capabilities = [{quoted}]\n}}')
    return "\n\n".join(blocks) + "\n"
