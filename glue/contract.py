"""The handler contract: the public API that modules under ``handlers/`` build on.

A handler is an async function registered with :func:`handler`::

    class RestartParams(glue.Params):
        namespace: str
        name: str

    @glue.handler("kubernetes.restart", params=RestartParams, rbac=[...])
    async def restart(*, event, params, ctx, **kwargs):
        if ctx.dry_run:
            return glue.Plan([glue.Call("PATCH", "/apis/apps/v1/...", body={...})])
        ...

It is called with keyword arguments only and must accept ``**kwargs`` so that new context never
breaks an old plugin:

- ``event``: the :class:`~cloudevents.core.v1.event.CloudEvent`;
- ``params``: an instance of the handler's parameter model, rendered from the route's templates;
- ``ctx``: a :class:`Context` (logger bound to event id / route / attempt, idempotency key, dry-run
  flag, attempt number, deadline, shared clients).

It signals what happens next by raising :class:`TemporaryError` (retry, optionally after ``delay``
seconds) or :class:`PermanentError` (dead-letter now); any other exception follows the route's delivery
policy. In dry-run it returns a :class:`Plan` and changes nothing. Every handler must be idempotent
under redelivery: it uses ``ctx.idempotency_key`` (deterministic names, check-and-set, server-side apply).

The decorator returns the function unchanged, so a test can call it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import pydantic
import structlog

__all__ = [
    "Call",
    "Clients",
    "Context",
    "Handler",
    "HandlerError",
    "Needs",
    "Params",
    "PermanentError",
    "Plan",
    "PolicyPath",
    "Probe",
    "RbacRule",
    "Registry",
    "TemporaryError",
    "client",
    "handler",
    "literal_namespace",
    "registry",
]


class HandlerError(Exception):
    """Base of the errors a handler raises on purpose."""


class TemporaryError(HandlerError):
    """Try again later: after ``delay`` seconds if given, else on the route's backoff schedule."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(HandlerError):
    """Retrying cannot help: dead-letter at once."""


class Params(pydantic.BaseModel):
    """Base for handler parameter models: unknown keys are an error, values are immutable.

    A template that is one expression keeps its JSON type (``"{{ data.replicas }}"`` is a number), so
    a text field also takes a number."""

    model_config = pydantic.ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, coerce_numbers_to_str=True
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One call a handler would make. ``body`` names paths and versions, never secret values."""

    method: str
    target: str
    body: Any = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"method": self.method, "target": self.target}
        if self.body is not None:
            result["body"] = self.body
        if self.note:
            result["note"] = self.note
        return result


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What a handler would do, in order. Returned in dry-run instead of acting."""

    calls: tuple[Call, ...] | list[Call] = ()
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "calls": [call.to_dict() for call in self.calls]}


@dataclasses.dataclass(frozen=True, slots=True)
class RbacRule:
    """A Kubernetes PolicyRule a handler needs; ``glue rbac`` merges them into a Role/ClusterRole."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    cluster_scoped: bool = False
    #: Narrow ``resources`` to the one a route's literal parameter names:
    #: (parameter, its default, ((value, resource), ...)), e.g. ("kind", "Deployment", (("Deployment",
    #: "deployments"), ...)); a parameter rendered from the event keeps every resource.
    narrow_by: tuple[str, str | None, tuple[tuple[str, str], ...]] | None = None
    #: The rule applies once per item of this list parameter (an OpenBao rotation's ``restart``
    #: workloads), each item narrowed by its own params and granted in its own literal namespace; an
    #: empty or absent list needs nothing. None: the rule is the route's, as its params say.
    each: str | None = None
    #: Needed by the handler's cancel step only: granted to routes whose concurrencyGroup cancels.
    cancel_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }

    def narrowed(self, params: Mapping[str, Any]) -> RbacRule:
        """This rule for a route with these (unrendered) params: only the resource it names."""
        if self.narrow_by is None:
            return self
        param, default, choices = self.narrow_by
        value = params.get(param, default)
        literal = isinstance(value, str) and "{{" not in value and "{%" not in value
        resource = dict(choices).get(value) if literal else None
        if resource is None:
            return self
        return dataclasses.replace(self, resources=(resource,), narrow_by=None)

    def targets(self, params: Mapping[str, Any]) -> list[tuple[str | None, RbacRule]]:
        """Where this rule is needed for a route with these (unrendered) params: ``(namespace, rule)``
        pairs, the namespace None when it is not a literal (any namespace). A rule without ``each``
        is the route's own; one with ``each`` is needed once per item of that list parameter (a list
        rendered from the event: anywhere, every resource)."""
        if self.each is None:
            return [(literal_namespace(params), self.narrowed(params))]
        items = params.get(self.each)
        plain = dataclasses.replace(self, each=None)
        if items is None or items == [] or items == ():
            return []
        if not isinstance(items, list | tuple):
            return [(None, dataclasses.replace(plain, narrow_by=None))]
        return [
            (literal_namespace(item), plain.narrowed(item))
            if isinstance(item, Mapping)
            else (None, dataclasses.replace(plain, narrow_by=None))
            for item in items
        ]


def literal_namespace(params: Mapping[str, Any]) -> str | None:
    """``params.namespace`` when it is a literal (no template), else None (the route may act anywhere)."""
    value = params.get("namespace")
    if isinstance(value, str) and value and "{" not in value:
        return value
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyPath:
    """An OpenBao path a handler calls and the policy capabilities it needs there.

    ``{name}`` in ``path`` is the handler's parameter of that name; ``{ledger}`` is the client's
    ledger (``clients.openbao.ledger``: mount, then prefix), e.g. ``{mount}/data/{path}``."""

    path: str
    capabilities: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "capabilities": list(self.capabilities)}


class HandlerFn(Protocol):
    def __call__(self, **kwargs: Any) -> Awaitable[Plan | None]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the function and what the executor and tools need to know of it."""

    name: str
    fn: HandlerFn
    params: type[Params]
    rbac: tuple[RbacRule, ...] = ()
    clients: tuple[str, ...] = ()  # names of shared clients it uses (see :func:`client`)
    description: str = ""
    openbao: tuple[PolicyPath, ...] = ()  # OpenBao paths and capabilities it needs
    #: Undoes what a cancelled invocation started (``argo.submit`` stops its Workflow); called with
    #: the same keyword arguments as ``fn`` when a newer invocation of a ``cancel`` group arrives.
    cancel: HandlerFn | None = None


#: Takes the client's config: the validated model when the client declares one, else the raw mapping.
ClientFactory = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Needs:
    """What the enabled routes need of the clients, for their probes: the Kubernetes permissions,
    each ``(namespace, PolicyRules)`` with None for every namespace (a ClusterRole), as ``glue rbac``
    grants them."""

    kubernetes: tuple[tuple[str | None, tuple[Mapping[str, Any], ...]], ...] = ()


#: A client's probe: the opened client and what the routes need -> None (it can work) or why not.
Probe = Callable[[Any, Needs], Awaitable[str | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class ClientSpec:
    """A shared client (an aiohttp session, a Kubernetes ApiClient, an OpenBao client).

    ``factory(config)`` is an async context manager yielding the client; ``config`` is the mapping under
    ``clients.<name>`` in the settings, validated by ``config_model`` when the settings load.
    """

    name: str
    factory: ClientFactory
    config_model: type[pydantic.BaseModel] | None = None
    #: Whether there is something to connect to (a cluster, a server) for this config; None: always.
    configured: Callable[[Any], bool] | None = None
    #: What the client would talk to, for the start-up line (an address, a context); no secret.
    describe: Callable[[Any], str] | None = None
    #: Checks the client can do its work (``glue.health``): called with the opened client and what
    #: the routes need; returns None when it can, else why not (one line, no secret).
    probe: Probe | None = None


class Registry:
    """Handlers and client factories by name. Tests may build their own and pass it down."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.clients: dict[str, ClientSpec] = {}

    def add(self, entry: Handler) -> None:
        if entry.name in self.handlers and self.handlers[entry.name].fn is not entry.fn:
            raise ValueError(f"handler {entry.name!r} is registered twice")
        self.handlers[entry.name] = entry

    def add_client(self, spec: ClientSpec) -> None:
        self.clients[spec.name] = spec

    def check_clients(self, config: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
        """Validate each configured client against its model: (field, reason) for every problem."""
        problems: list[tuple[str, str]] = []
        for name, values in config.items():
            spec = self.clients.get(name)
            if spec is None:
                known = ", ".join(sorted(self.clients)) or "none"
                problems.append((f"clients.{name}", f"no client of that name (known: {known})"))
                continue
            if spec.config_model is None:
                continue
            try:
                spec.config_model.model_validate(values)
            except pydantic.ValidationError as exc:
                for error in exc.errors(include_url=False):
                    where = ".".join(str(part) for part in error["loc"])
                    problems.append((f"clients.{name}" + (f".{where}" if where else ""), error["msg"]))
        return problems

    def get(self, name: str) -> Handler:
        try:
            return self.handlers[name]
        except KeyError:
            known = ", ".join(sorted(self.handlers)) or "none"
            raise KeyError(f"unknown handler {name!r} (known: {known})") from None


#: The default registry that ``handlers/`` modules register into on import.
registry = Registry()


def handler(
    name: str,
    *,
    params: type[Params] = Params,
    rbac: tuple[RbacRule, ...] | list[RbacRule] = (),
    clients: tuple[str, ...] | list[str] = (),
    openbao: tuple[PolicyPath, ...] | list[PolicyPath] = (),
    cancel: Callable[..., Awaitable[Plan | None]] | None = None,
    registry: Registry | None = None,
) -> Callable[[Callable[..., Awaitable[Plan | None]]], Callable[..., Awaitable[Plan | None]]]:
    """Register an async handler under ``name`` and return it unchanged. ``rbac`` and ``openbao``
    declare what it needs of the Kubernetes API and of OpenBao (``glue handlers``, ``glue rbac``).

    ``cancel``: the optional cancel step, an async function called like the handler (``event``,
    ``params``, ``ctx``) when a route's ``concurrencyGroup`` cancels an invocation that is running or
    finished last: it stops what the handler started, idempotently. Without one, a cancelled
    invocation's attempt is only stopped."""
    target = registry if registry is not None else globals()["registry"]

    def wrap(fn: Callable[..., Awaitable[Plan | None]]) -> Callable[..., Awaitable[Plan | None]]:
        target.add(
            Handler(
                name=name,
                fn=fn,
                params=params,
                rbac=tuple(rbac),
                clients=tuple(clients),
                description=(fn.__doc__ or "").strip().split("\n")[0],
                openbao=tuple(openbao),
                cancel=cancel,
            )
        )
        return fn

    return wrap


def client(
    name: str,
    *,
    config: type[pydantic.BaseModel] | None = None,
    configured: Callable[[Any], bool] | None = None,
    describe: Callable[[Any], str] | None = None,
    probe: Probe | None = None,
    registry: Registry | None = None,
) -> Callable[[ClientFactory], ClientFactory]:
    """Register a shared-client factory: an async context manager taking the client's config.

    ``configured(config)`` tells whether there is anything to connect to; a handler whose first client
    is not configured runs in dry-run (a laptop without a cluster gets plans, not failures).
    ``describe(config)`` names what it talks to, for the daemon's start-up lines. ``probe(client,
    needs)`` checks it can do the routes' work (reachable, logged in, permitted): None, or why not."""
    target = registry if registry is not None else globals()["registry"]

    def wrap(factory: ClientFactory) -> ClientFactory:
        target.add_client(
            ClientSpec(
                name=name,
                factory=factory,
                config_model=config,
                configured=configured,
                describe=describe,
                probe=probe,
            )
        )
        return factory

    return wrap


class Clients:
    """Shared clients, opened on first use and closed, in reverse order, when the daemon stops."""

    def __init__(self, registry: Registry, config: Mapping[str, Mapping[str, Any]]) -> None:
        self._registry = registry
        self._config = config
        self._stack = contextlib.AsyncExitStack()
        self._open: dict[str, Any] = {}

    async def get(self, name: str) -> Any:
        if name not in self._open:
            try:
                spec = self._registry.clients[name]
            except KeyError:
                raise PermanentError(f"no client named {name!r} is registered") from None
            config = self._config.get(name, {})
            if spec.config_model is not None:
                config = spec.config_model.model_validate(config)  # type: ignore[assignment]
            self._open[name] = await self._stack.enter_async_context(spec.factory(config))
        return self._open[name]

    def configured(self, name: str) -> bool:
        """Whether the client can reach something: provided, or its config names a target."""
        if name in self._open:
            return True
        spec = self._registry.clients.get(name)
        if spec is None:
            return False
        config: Any = self._config.get(name, {})
        if spec.config_model is not None:
            try:
                config = spec.config_model.model_validate(config)
            except pydantic.ValidationError:
                return False  # e.g. clients.openbao absent: no address to reach
        return spec.configured is None or spec.configured(config)

    def target(self, name: str) -> str:
        """What the client talks to, in words (its ``describe``), or why it talks to nothing."""
        spec = self._registry.clients.get(name)
        if spec is None:
            return "not registered"
        config: Any = self._config.get(name, {})
        if spec.config_model is not None:
            try:
                config = spec.config_model.model_validate(config)
            except pydantic.ValidationError:
                return f"not configured (no clients.{name})"
        if spec.configured is not None and not spec.configured(config):
            return "nothing to reach: the routes using it only plan"
        if spec.describe is None:
            return "configured"
        try:
            return spec.describe(config)
        except Exception as exc:  # a description is best effort; the client itself reports its errors
            return f"configured ({type(exc).__name__}: {exc})"

    def set(self, name: str, value: Any) -> None:
        """Provide a ready client (tests, or a caller that owns its lifetime)."""
        self._open[name] = value

    async def aclose(self) -> None:
        self._open.clear()
        await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Clients]:
        try:
            yield self
        finally:
            await self.aclose()


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows of the invocation besides the event and its params."""

    route: str
    handler: str
    idempotency_key: str
    attempt: int
    dry_run: bool
    log: structlog.stdlib.BoundLogger
    clients: Clients
    deadline: float | None = None  # loop.time() by which the attempt must end
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # route-level extras
    #: The ids of the events this invocation stands for: its own, after those a route's ``coalesce``
    #: folded into it (in event order); just its own otherwise.
    event_ids: tuple[str, ...] = ()
