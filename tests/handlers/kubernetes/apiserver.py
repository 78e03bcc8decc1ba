"""A Kubernetes API server double: kmock's KubernetesEmulator with the API conventions it lacks.

kmock serves objects over real HTTP, but as plain JSON dicts: create answers 200, there is no
resourceVersion, generation, status subresource, dry run, server-side apply or patch-type handling. The
handlers rely on all of these, so :class:`ApiServer` implements them for object reads and writes (GET of
one object, POST, PUT, PATCH, DELETE, with the ``/status`` subresource), and leaves discovery, lists and
watches to kmock. Objects live in kmock's store, so ``api.objects[resource, ns, name]`` and its
``.history`` (one version per persisted write) are what the tests assert on.

It follows these upstream documents:

- API concepts (https://kubernetes.io/docs/reference/using-api/api-concepts/): 201 Created,
  ``metadata.resourceVersion`` changing on every persisted write and not on a no-op, optimistic
  concurrency (a stale resourceVersion on PUT or PATCH is 409 Conflict), ``dryRun=All`` (full processing,
  nothing persisted), errors as a ``Status`` object with ``reason`` NotFound / AlreadyExists / Conflict /
  Invalid / BadRequest / UnsupportedMediaType.
- API conventions (kubernetes/community: contributors/devel/sig-architecture/api-conventions.md):
  ``metadata.generation`` starts at 1 and increments on changes outside metadata and status; with the
  status subresource, writes to the main resource ignore ``status`` and writes to ``/status`` change only
  ``status`` (CustomResourceDefinition docs, "Status subresource").
- Patch types (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/):
  JSON merge patch (RFC 7386) for every resource; strategic merge patch for built-in kinds only (custom
  resources answer 415). Simplification: strategic merge here merges maps like a merge patch and replaces
  lists (no merge keys or ``$patch`` directives); the handlers only patch maps with it.
- Server-side apply (https://kubernetes.io/docs/reference/using-api/server-side-apply/): ``fieldManager``
  required, creates a missing object, sets every field of the applied configuration, removes
  fields the same manager applied before and no longer applies (unless another manager owns them), and
  answers 409 Conflict when another applier owns a field with a different value unless ``force=true``.
  Simplifications: ownership is tracked for appliers only, at leaf level, with lists atomic (the default for
  CRD lists without ``x-kubernetes-list-type``); ``managedFields`` is not rendered.
- JSON patch is not implemented: the handlers do not send it; a request gets 500 saying so.
- Custom resources refuse an update (PUT, also of ``/status``) that names no resourceVersion: 422
  "must be specified for an update" (kubernetes/apiextensions-apiserver
  pkg/registry/customresource/strategy.go, ``AllowUnconditionalUpdate`` false); built-in kinds allow it.
- Patch options as apimachinery's ``ValidatePatchOptions`` checks them: ``force`` on a non-apply patch and
  an apply without ``fieldManager`` are 422 Invalid.
- Objects are validated against their CRD's schema (schemas.py, registered by the conftest fixture).

- Authorization reviews (https://kubernetes.io/docs/reference/access-authn-authz/authorization/,
  "Checking API access"; kubernetes/api authorization/v1 types.go; kubernetes
  pkg/registry/authorization/selfsubjectrulesreview/rest.go): ``SelfSubjectRulesReview`` (201, its
  ``spec.namespace`` required, else 400; ``status.resourceRules`` are the rules that apply there:
  cluster-wide ones and that namespace's) and ``SelfSubjectAccessReview`` (201, ``status.allowed`` for
  ``spec.resourceAttributes``; no namespace: allowed only by a cluster-wide rule). What the caller is
  granted is :attr:`ApiServer.granted` (None: bound cluster-wide; by default everything, like
  cluster-admin). With :attr:`ApiServer.refuse_credentials` every request gets 401 Unauthorized, as an
  API server answers a bearer token it does not accept.

Tests inject failures with :meth:`ApiServer.fail` (a status, a Status reason/message, headers such as
``Retry-After``), concurrent writers with :meth:`ApiServer.before`, and custom validation with
:attr:`ApiServer.validators` (the CRD's CEL rules, answered as 422 Invalid like the API server does).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import inspect
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

Validator = Callable[[dict[str, Any] | None, dict[str, Any]], list[str]]


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the double knows of a resource type (what a CRD or the built-in registry declares)."""

    kind: str
    namespaced: bool = True
    status: bool = True  # has the status subresource
    builtin: bool = False  # accepts strategic merge patch


@dataclasses.dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    reason: str
    message: str
    headers: dict[str, str]
    times: int


@dataclasses.dataclass
class Hook:
    method: str
    path: re.Pattern[str]
    action: Callable[[], object]


class _Reject(Exception):
    def __init__(self, status: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.details = status, reason, message, details or {}


def status_body(
    status: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success" if status < 400 else "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": status,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _leaves(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Leaf paths of an applied configuration: maps recurse, lists and scalars are atomic."""
    if isinstance(obj, dict) and obj:
        result: dict[tuple[str, ...], Any] = {}
        for key, value in obj.items():
            result.update(_leaves(value, (*prefix, key)))
        return result
    return {prefix: obj}


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop maps left empty
        if parents[depth] == {}:
            parents[depth - 1].pop(path[depth - 1], None)


_IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with resourceVersion, generation, status subresource, dry run, patch types, SSA."""

    kinds: dict[kmock.resource, Kind] = attrs.field(factory=dict)
    validators: dict[kmock.resource, list[Validator]] = attrs.field(factory=dict)
    faults: list[Fault] = attrs.field(factory=list)
    hooks: list[Hook] = attrs.field(factory=list)
    writes: list[dict[str, Any]] = attrs.field(factory=list)  # every write request, dry-run or not
    #: The caller's rules: None -> bound cluster-wide (a ClusterRoleBinding), a namespace -> there only.
    granted: dict[str | None, list[dict[str, Any]]] = attrs.field(
        factory=lambda: {None: [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    )
    refuse_credentials: bool = False
    reviews: list[dict[str, Any]] = attrs.field(factory=list)  # every authorization review asked
    _rv: int = 1000
    _applied: dict[tuple[Any, ...], dict[str, set[tuple[str, ...]]]] = attrs.field(factory=dict)
    _pending_events: list[tuple[Any, dict[str, Any]]] = attrs.field(factory=list)

    # ------------------------------------------------------------------------------- test-side API

    def define(
        self, resource: str, kind: str, *, namespaced: bool = True, status: bool = True, builtin: bool = False
    ) -> kmock.resource:
        res = kmock.resource(resource)
        self.kinds[res] = Kind(kind, namespaced, status, builtin)
        self.resources[res] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            subresources={"status"} if status else set(),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        return res

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        reason: str = "",
        message: str = "",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and the path regex with an error."""
        self.faults.append(
            Fault(
                method.upper(),
                re.compile(path),
                status,
                reason or _REASONS.get(status, "Unknown"),
                message or f"injected failure {status}",
                headers or {},
                times,
            )
        )

    def before(self, method: str, path: str, action: Callable[[], object]) -> None:
        """Run ``action`` (a concurrent writer, say) once, just before the next matching request; an
        awaitable it returns is awaited first (a server slow to answer that request)."""
        self.hooks.append(Hook(method.upper(), re.compile(path), action))

    def seed(self, resource: str | kmock.resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as a create through the API would (uid, resourceVersion, generation)."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        meta = obj.get("metadata", {})
        new = self._admit(res, None, copy.deepcopy(obj), keep_status=True)
        self.objects[res, meta.get("namespace"), meta["name"]] = new
        return new

    def set_status(
        self, resource: str | kmock.resource, namespace: str | None, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """What a controller does: merge into ``status`` through the status subresource."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        stored = self.objects[res, namespace, name]
        new = copy.deepcopy(stored.raw)
        new["status"] = merge_patch(new.get("status") or {}, status)
        self._bump(new)
        stored.history.append(new)
        return new

    def find(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object, or None when there is none (never created, or deleted)."""
        return self._live((kmock.resource(resource), namespace, name))

    def read(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        """The stored object, which the caller knows exists."""
        found = self.find(resource, namespace, name)
        if found is None:
            raise KeyError(f"no {resource} {namespace}/{name} in the API server")
        return found

    def versions(self, resource: str, namespace: str | None, name: str) -> int:
        """How many versions were persisted (creates and changing writes)."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects:
            return 0
        return sum(1 for version in self.objects[key].history if version is not None)

    # ------------------------------------------------------------------------------- serving

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        method = str(getattr(request.method, "value", request.method)).upper()
        if self.refuse_credentials:
            return aiohttp.web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        review = _REVIEW.search(request.url.path)
        if review is not None and method == "POST":  # an authorization question, not a write
            return self._review(review.group(1), _parse_body(request))
        if method != "GET":
            self.writes.append(
                {
                    "method": method,
                    "path": request.url.path,
                    "query": dict(request.params),
                    "contentType": request.headers.get("Content-Type", ""),
                    "traceparent": request.headers.get("traceparent"),
                    "body": _parse_body(request),
                    "at": time.monotonic(),
                    "answered": None,  # a fault's status when one answered it
                }
            )
        for hook in list(self.hooks):
            if hook.method == method and hook.path.search(request.url.path):
                self.hooks.remove(hook)
                done = hook.action()
                if inspect.isawaitable(done):  # a slow server: the request waits for it
                    await done
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path.search(request.url.path):
                fault.times -= 1
                if method != "GET":
                    self.writes[-1]["answered"] = fault.status
                return aiohttp.web.json_response(
                    status_body(fault.status, fault.reason, fault.message),
                    status=fault.status,
                    headers=fault.headers,
                )
        res = request.resource
        listing = request.name is None and method == "GET"
        if res is None or listing or request.params.get("watch") in _TRUE:
            return await super(kmock.KubernetesEmulator, self)._handle(request)  # discovery, lists, watches
        try:
            async with self._lock:
                status, body = await self._serve(request, method, res)
        except _Reject as exc:
            return aiohttp.web.json_response(
                status_body(exc.status, exc.reason, exc.message, exc.details), status=exc.status
            )
        finally:
            pending, self._pending_events = self._pending_events, []
            for resource, event in pending:  # watchers see every persisted change
                await self._buses[resource].put(event)
        return aiohttp.web.json_response(body, status=status)

    def _rules_in(self, namespace: str | None) -> list[dict[str, Any]]:
        rules = list(self.granted.get(None, []))
        if namespace is not None:
            rules += self.granted.get(namespace, [])
        return rules

    def _review(self, kind: str, body: Any) -> aiohttp.web.StreamResponse:
        """A SelfSubjectRulesReview or SelfSubjectAccessReview of what :attr:`granted` holds."""
        spec = (body or {}).get("spec") or {}
        self.reviews.append({"kind": kind, "spec": spec})
        answer = {"apiVersion": "authorization.k8s.io/v1", "metadata": {}, "spec": spec}
        if kind == "selfsubjectrulesreviews":
            namespace = spec.get("namespace")
            if not namespace:
                return aiohttp.web.json_response(
                    status_body(400, "BadRequest", "no namespace on request"), status=400
                )
            rules = [
                {"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]}
                for r in self._rules_in(namespace)
            ]
            answer |= {
                "kind": "SelfSubjectRulesReview",
                "status": {"resourceRules": rules, "nonResourceRules": [], "incomplete": False},
            }
            return aiohttp.web.json_response(answer, status=201)
        attributes = spec.get("resourceAttributes") or {}
        wanted = (attributes.get("group", ""), attributes.get("resource"), attributes.get("verb"))
        allowed = any(
            all(
                value in rule[key] or "*" in rule[key]
                for key, value in zip(("apiGroups", "resources", "verbs"), wanted, strict=True)
            )
            for rule in self._rules_in(attributes.get("namespace") or None)
        )
        answer |= {"kind": "SelfSubjectAccessReview", "status": {"allowed": allowed}}
        return aiohttp.web.json_response(answer, status=201)

    async def _serve(self, request: kmock.Request, method: str, res: kmock.resource) -> tuple[int, Any]:
        kind = self.kinds.get(res)
        if kind is None:
            raise _Reject(404, "NotFound", "the server could not find the requested resource")
        namespace = request.namespace if kind.namespaced else None
        sub = request.subresource
        if sub not in (None, "status") or (sub == "status" and not kind.status):
            raise _Reject(404, "NotFound", "the server could not find the requested resource")
        dry_run = self._dry_run(request)

        if method == "POST":
            body = _parse_body(request)
            if not isinstance(body, dict):
                raise _Reject(400, "BadRequest", "the body of the request was in an unknown format")
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise _Reject(
                    422,
                    "Invalid",
                    f'{kind.kind} "" is invalid: metadata.name: Required value: '
                    "name or generateName is required",
                )
            if kind.namespaced:
                meta["namespace"] = request.namespace
            key = (res, namespace, meta["name"])
            if self._live(key) is not None:
                raise _Reject(
                    409,
                    "AlreadyExists",
                    f'{_qualified(res)} "{meta["name"]}" already exists',
                    self._details(res, kind, meta["name"]),
                )
            new = self._admit(res, None, body, keep_status=not kind.status)
            self._persist(key, None, new, dry_run, res)
            return 201, new

        name = request.name
        assert name is not None
        key = (res, namespace, name)
        live = self._live(key)
        if method == "GET":
            if live is None:
                raise self._not_found(res, kind, name)
            return 200, live
        if method == "DELETE":
            if live is None:
                raise self._not_found(res, kind, name)
            if not dry_run:
                self.objects[key].delete()
                self._applied.pop(key, None)
                self._pending_events.append((res, {"type": "DELETED", "object": live}))
            return 200, status_body(
                200, "", "", self._details(res, kind, name) | {"uid": live["metadata"]["uid"]}
            )

        body = _parse_body(request)
        if method == "PUT":
            if live is None:
                raise self._not_found(res, kind, name)
            if not isinstance(body, dict):
                raise _Reject(400, "BadRequest", "the body of the request was in an unknown format")
            if not kind.builtin and not (body.get("metadata") or {}).get("resourceVersion"):
                # apiextensions-apiserver pkg/registry/customresource/strategy.go: AllowUnconditionalUpdate
                # is false, so the generic store refuses an update that names no resourceVersion.
                raise _Reject(
                    422,
                    "Invalid",
                    f'{_qualified(res)} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                    "must be specified for an update",
                    self._details(res, kind, name),
                )
            self._precondition(res, name, live, body)
            new = self._write(res, kind, sub, live, body)
            return 200, self._persist(key, live, new, dry_run, res)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type != APPLY_PATCH and "force" in request.params:
                # apimachinery pkg/apis/meta/v1/validation ValidatePatchOptions.
                raise _Reject(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: '
                    "may not be specified for non-apply patch",
                )
            if content_type == APPLY_PATCH:
                return await self._apply(request, res, kind, key, live, body, dry_run)
            if live is None:
                raise self._not_found(res, kind, name)
            if content_type == STRATEGIC_MERGE_PATCH and not kind.builtin:
                raise _Reject(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
                )
            if content_type not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
                if content_type == JSON_PATCH:
                    raise _Reject(500, "InternalError", "JSON patch is not implemented in this test double")
                raise _Reject(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
            if not isinstance(body, dict):
                raise _Reject(400, "BadRequest", "the body of the request was in an unknown format")
            self._precondition(res, name, live, body)
            patched = merge_patch(live, body)
            new = self._write(res, kind, sub, live, patched)
            return 200, self._persist(key, live, new, dry_run, res)
        raise _Reject(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    async def _apply(
        self,
        request: kmock.Request,
        res: kmock.resource,
        kind: Kind,
        key: tuple[Any, ...],
        live: dict[str, Any] | None,
        body: Any,
        dry_run: bool,
    ) -> tuple[int, Any]:
        manager = request.params.get("fieldManager")
        if not manager:
            raise _Reject(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                "Required value: is required for apply patch",
            )
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise _Reject(400, "BadRequest", "apply patch must carry apiVersion and kind")
        if (body.get("metadata") or {}).get("name") != key[2]:
            raise _Reject(400, "BadRequest", "the name of the object does not match the name on the URL")
        force = request.params.get("force") in _TRUE
        sub = request.subresource
        applied = {path: value for path, value in _leaves(body).items() if path not in _IDENTITY}
        if not sub and kind.status:
            applied = {path: value for path, value in applied.items() if path[0] != "status"}
        owners = (
            self._applied.setdefault(key, {}) if not dry_run else copy.deepcopy(self._applied.get(key, {}))
        )
        base = (
            copy.deepcopy(live)
            if live is not None
            else {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "metadata": {"name": key[2], **({"namespace": key[1]} if key[1] else {})},
            }
        )
        conflicts = [
            (other, path)
            for other, paths in owners.items()
            if other != manager
            for path in paths
            if path in applied and _get(base, path) != applied[path]
        ]
        if conflicts and not force:
            fields = ", ".join(f'conflict with "{other}": .{".".join(path)}' for other, path in conflicts)
            raise _Reject(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {fields}")
        for other, path in conflicts:
            owners[other].discard(path)
        previous = owners.get(manager, set())
        others = (
            set().union(*(paths for other, paths in owners.items() if other != manager)) if owners else set()
        )
        for path in previous - set(applied) - others:
            _remove(base, path)
        for path, value in applied.items():
            _set(base, path, value)
        owners[manager] = set(applied)
        new = (
            self._write(res, kind, sub, live, base)
            if live is not None
            else self._admit(res, None, base, keep_status=not kind.status)
        )
        if live is None:
            self._persist(key, None, new, dry_run, res)
            return 201, new
        return 200, self._persist(key, live, new, dry_run, res)

    # ------------------------------------------------------------------------------- semantics

    def _dry_run(self, request: kmock.Request) -> bool:
        value = request.params.get("dryRun")
        if value is None:
            return False
        if value != "All":
            raise _Reject(400, "BadRequest", f"Invalid dry run value: {value!r} (only All is allowed)")
        return True

    def _live(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        if key not in self.objects or self.objects[key].deleted:
            return None
        live: dict[str, Any] = copy.deepcopy(self.objects[key].raw)
        return live

    def _precondition(
        self, res: kmock.resource, name: str, live: dict[str, Any], body: dict[str, Any]
    ) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != live["metadata"]["resourceVersion"]:
            raise _Reject(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object '
                "has been modified; please apply your changes to the latest version "
                "and try again",
            )

    def _write(
        self, res: kmock.resource, kind: Kind, sub: str | None, live: dict[str, Any], proposed: dict[str, Any]
    ) -> dict[str, Any]:
        """The object after an update: subresource rules, immutable metadata, generation."""
        if sub == "status":
            new = copy.deepcopy(live)
            new["status"] = copy.deepcopy(proposed.get("status"))
            if new["status"] is None:
                new.pop("status")
        else:
            new = copy.deepcopy(proposed)
            if kind.status:
                if "status" in live:
                    new["status"] = copy.deepcopy(live["status"])
                else:
                    new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation"):
            if field in live["metadata"]:
                meta[field] = live["metadata"][field]
        spec_old = {k: v for k, v in live.items() if k not in ("metadata", "status")}
        spec_new = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        if spec_old != spec_new:
            meta["generation"] = int(live["metadata"].get("generation", 1)) + 1
        self._validate(res, kind, live, new)
        return new

    def _admit(
        self, res: kmock.resource, live: None, new: dict[str, Any], *, keep_status: bool
    ) -> dict[str, Any]:
        kind = self.kinds[res]
        if not keep_status:
            new.pop("status", None)
        meta = new.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1
        self._validate(res, kind, None, new)
        self._bump(new)
        return new

    def _validate(
        self, res: kmock.resource, kind: Kind, live: dict[str, Any] | None, new: dict[str, Any]
    ) -> None:
        problems = [problem for check in self.validators.get(res, []) for problem in check(live, new)]
        if problems:
            name = new.get("metadata", {}).get("name", "")
            raise _Reject(
                422,
                "Invalid",
                f'{kind.kind}.{res.group} "{name}" is invalid: ' + "; ".join(problems),
                self._details(res, kind, name),
            )

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)

    def _persist(
        self,
        key: tuple[Any, ...],
        live: dict[str, Any] | None,
        new: dict[str, Any],
        dry_run: bool,
        res: kmock.resource,
    ) -> dict[str, Any]:
        if live is not None:
            if new == live:
                return live  # a no-op write persists nothing and keeps the resourceVersion
            self._bump(new)
        if dry_run:
            return new
        if key in self.objects:
            self.objects[key].history.append(new)
        else:
            self.objects[key] = new
        event = "ADDED" if live is None else "MODIFIED"
        self._pending_events.append((res, {"type": event, "object": copy.deepcopy(new)}))
        return new

    def _details(self, res: kmock.resource, kind: Kind, name: str) -> dict[str, Any]:
        return {"name": name, "group": res.group, "kind": res.plural}

    def _not_found(self, res: kmock.resource, kind: Kind, name: str) -> _Reject:
        return _Reject(
            404, "NotFound", f'{_qualified(res)} "{name}" not found', self._details(res, kind, name)
        )


def _qualified(res: kmock.resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else str(res.plural)


def _parse_body(request: kmock.Request) -> Any:
    raw = request.body or b""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return None


#: Query booleans as the API server parses them (Go's strconv.ParseBool); kubernetes-asyncio sends "True".
_REVIEW = re.compile(r"^/apis/authorization\.k8s\.io/v1/(selfsubjectrulesreviews|selfsubjectaccessreviews)$")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
