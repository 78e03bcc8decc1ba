"""Rules: which routes an event matches, with which parameters, and why (not).

A route names a CEL ``match`` expression over the CloudEvent, a handler, parameter templates and a
delivery policy::

    routes:
      - name: restart-on-push
        match: type == "harbor.artifact.pushed" && data.repository.name.startsWith("team-a/")
        handler: kubernetes.restart
        params:
          namespace: team-a
          name: "{{ data.repository.name | replace('team-a/', '') }}"
        orderingKey: "{{ data.repository.name }}"
        delivery: {attempts: 5, backoff: {initial: 1, multiplier: 2, max: 60, jitter: 0.2}, timeout: 30}

CEL expressions and templates see the same variables: every context attribute of the event (``id``,
``source``, ``type``, ``subject``, ``time``, extensions; optional ones absent from the event are
``null``) and ``data`` (parsed JSON, a string, or bytes). Templates are Jinja in a sandbox with strict
undefined; rendered values are validated by the handler's parameter model. A parameter that is exactly
one expression (``"{{ data.endpoints }}"``) keeps the JSON type of its value (list, object, number,
bool, null), so a route can hand a list from the event to a handler; anything else renders to text
(``"{{ data.count | string }}"`` forces text).

Each route's CEL program is compiled once at load. Handing a value to CEL converts it whole, which for a
webhook payload of a few kilobytes costs far more than the evaluation, so a program is given only what
it reads: the variables it names, and of those only the fields it selects (``data.project.name`` hands
over ``{"project": {"name": ...}}``); a variable used in any other way (indexed, compared whole, iterated)
is handed over whole. The routes evaluated for one event share one converted context.

Everything that can be checked without an event is checked by :func:`load`: CEL syntax, template
syntax, unknown handlers, parameters a handler's model cannot accept.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any

import cel
import durationpy
import jinja2
import jinja2.environment
import jinja2.exceptions
import jinja2.nodes
import jinja2.sandbox
import pydantic
import structlog
from pydantic.alias_generators import to_camel

from glue import contract, events, journal, metrics, rails, retry, settings
from glue import enrich as enrich_mod

__all__ = [
    "ERROR_LOG_SECONDS",
    "Backoff",
    "CoalesceSpec",
    "ConcurrencyGroup",
    "Decision",
    "DeliveryPolicy",
    "RateLimit",
    "Route",
    "Router",
    "context_of",
    "load",
]

log = structlog.get_logger(__name__)

#: A route's expression errors are logged at most once in this many seconds (all are counted).
ERROR_LOG_SECONDS = 60.0

_NAME = r"^[a-z0-9][a-z0-9_.-]*$"
_OPTIONAL_ATTRIBUTES = ("subject", "time", "datacontenttype", "dataschema")


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Backoff(_Model):
    """A route's backoff as the config writes it; :meth:`policy` is the :class:`glue.retry.Policy`
    (exponential, capped at ``max``, spread by ``jitter``) that computes the delays."""

    initial: float = pydantic.Field(default=1.0, gt=0, description="Seconds before the second attempt.")
    multiplier: float = pydantic.Field(default=2.0, ge=1)
    max: float = pydantic.Field(default=300.0, gt=0, description="Longest wait between attempts.")
    jitter: float = pydantic.Field(default=0.1, ge=0, le=1)

    def policy(self) -> retry.Policy:
        """The retry policy these settings describe (what the executor waits between attempts)."""
        return retry.Policy(
            initial=self.initial, multiplier=self.multiplier, max=self.max, jitter=self.jitter
        )


class DeliveryPolicy(_Model):
    attempts: int = pydantic.Field(default=5, ge=1, le=1000, description="Attempts before giving up.")
    backoff: Backoff = Backoff()
    timeout: float = pydantic.Field(default=30.0, gt=0, le=3600, description="Seconds per attempt.")
    dead_letter: bool = pydantic.Field(
        default=True,
        description="Keep an invocation that gave up in the dead-letter queue (false: drop it, logged).",
    )


def _seconds(value: Any) -> Any:
    """A duration as Kubernetes and Go write it (``30s``, ``5m``, ``1h30m``, ``500ms``) or a number of
    seconds, as seconds; anything else is left for the float check to refuse."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return durationpy.from_str(text).total_seconds()
        except Exception:
            raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 5m, 1h30m, or seconds)") from None
    return value


#: Seconds, written as a number or a Go duration string.
Duration = Annotated[float, pydantic.BeforeValidator(_seconds), pydantic.Field(gt=0)]


class ConcurrencyGroup(_Model):
    """Invocations whose key renders the same form a group that runs one at a time, in event order;
    ``onConflict`` says what a newer one does to the older ones of the group."""

    key: str = pydantic.Field(min_length=1, description="Template; the group of an invocation.")
    on_conflict: journal.Conflict = pydantic.Field(
        default="queue",
        description="queue: wait in turn; supersede: the waiting older ones end superseded; "
        "cancel: also cancel the running one (the handler's cancel step runs).",
    )


class CoalesceSpec(_Model):
    """Invocations with the same key inside a window become one (see README, flow shaping)."""

    key: str = pydantic.Field(min_length=1, description="Template; events with the same key coalesce.")
    window: Duration = pydantic.Field(description="Quiet time that closes the window (30s, 5m).")
    max_wait: Duration | None = pydantic.Field(
        default=None, description="Longest a window stays open from its first event (default 10 windows)."
    )
    edge: typing.Literal["trailing", "leading"] = pydantic.Field(
        default="trailing",
        description="trailing: run once with the last event after the quiet; leading: run with the first.",
    )

    @pydantic.model_validator(mode="after")
    def _wait_covers_window(self) -> CoalesceSpec:
        if self.max_wait is not None and self.max_wait < self.window:
            raise ValueError(
                f"maxWait ({self.max_wait:g} s) is shorter than window ({self.window:g} s): a window "
                "would always close at maxWait; make maxWait at least the window"
            )
        return self

    @property
    def longest(self) -> float:
        """``maxWait`` in seconds, defaulting to ten windows."""
        return self.max_wait if self.max_wait is not None else 10 * self.window


class RateLimit(_Model):
    """A token bucket per rendered key: ``rate`` runs per ``per``, up to ``burst`` at once."""

    rate: float = pydantic.Field(gt=0, description="Tokens added per `per`.")
    per: Duration = pydantic.Field(default=1.0, description="The period of `rate` (1s, 1m).")
    burst: int = pydantic.Field(default=1, ge=1, le=100_000, description="Tokens a bucket holds at most.")
    key: str | None = pydantic.Field(
        default=None, description="Template; one bucket per rendered key (default: one for the route)."
    )

    @property
    def per_second(self) -> float:
        return self.rate / self.per


class Route(_Model):
    """One rule. See the module docstring for the variables its expressions see."""

    name: str = pydantic.Field(pattern=_NAME)
    match: str = pydantic.Field(default="true", min_length=1, description="CEL; must yield a bool.")
    handler: str
    params: dict[str, Any] = pydantic.Field(default={}, description="Templates for the handler's params.")
    delivery: DeliveryPolicy = DeliveryPolicy()
    ordering_key: str | None = pydantic.Field(
        default=None,
        description="Template; events with the same key run one at a time, in order "
        "(an alias of concurrencyGroup {key, onConflict: queue}).",
    )
    concurrency_group: ConcurrencyGroup | None = None
    coalesce: CoalesceSpec | None = None
    rate_limit: RateLimit | None = None
    concurrency: int | None = pydantic.Field(default=None, ge=1, description="In-flight cap for this route.")
    enabled: bool = True
    dry_run: bool = pydantic.Field(default=False, description="Run the handler's plan only; change nothing.")
    enrich: enrich_mod.Spec | None = pydantic.Field(
        default=None,
        description="Read the event's object from MinIO first: the `object` variable (glue.enrich).",
    )
    paused: bool = pydantic.Field(
        default=False, description="Start paused: invocations are journaled and held (GitOps)."
    )
    budget: Annotated[list[rails.Budget] | None, pydantic.BeforeValidator(rails.one_or_list)] = (
        pydantic.Field(default=None, description="Starts allowed per key in a sliding window; one or a list.")
    )
    breaker: rails.Breaker | None = None
    window: rails.Window | None = pydantic.Field(default=None, description="When invocations may start.")
    blackout: rails.Window | None = pydantic.Field(default=None, description="When they may not.")
    approval: rails.Approval | None = pydantic.Field(
        default=None, description="Invocations wait for `glue approve` with their dry-run plan."
    )

    @property
    def budgets(self) -> list[rails.Budget]:
        """``budget`` as a list (the config writes one mapping or several)."""
        return list(self.budget or [])

    @pydantic.model_validator(mode="after")
    def _one_group(self) -> Route:
        if self.ordering_key is not None and self.concurrency_group is not None:
            raise ValueError(
                "orderingKey is an alias of concurrencyGroup {key, onConflict: queue}: set one of them"
            )
        return self

    @functools.cached_property
    def group(self) -> ConcurrencyGroup | None:
        """The concurrency group, ``orderingKey`` read as one that queues."""
        if self.ordering_key is not None:
            return ConcurrencyGroup(key=self.ordering_key, on_conflict="queue")
        return self.concurrency_group


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What a route made of one event: matched or not, why, and with which parameters."""

    route: str
    handler: str
    enabled: bool
    matched: bool
    condition: str | None = None  # the (sub-)expression that was false or failed
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # what it saw
    error: str | None = None  # the match could not be evaluated
    params: Mapping[str, Any] | None = None  # rendered and validated
    params_error: str | None = None
    ordering_key: str | None = None
    #: Which expression failed on the event, if one did: ``match``, ``params``, ``orderingKey``,
    #: ``concurrencyGroup``, ``coalesce`` or ``rateLimit``.
    failed: str | None = None
    coalesce_key: str | None = None
    rate_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "route": self.route,
            "handler": self.handler,
            "enabled": self.enabled,
            "matched": self.matched,
        }
        if self.condition is not None:
            result["condition"] = self.condition
            result["values"] = {name: _jsonable(value) for name, value in self.values.items()}
        if self.error is not None:
            result["error"] = self.error
        if self.params is not None:
            result["params"] = _jsonable(self.params)
        if self.params_error is not None:
            result["paramsError"] = self.params_error
        if self.ordering_key is not None:
            result["orderingKey"] = self.ordering_key
        if self.coalesce_key is not None:
            result["coalesceKey"] = self.coalesce_key
        if self.rate_key is not None:
            result["rateLimitKey"] = self.rate_key
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# -- the event as expressions see it ---------------------------------------------------------------


def context_of(event: events.CloudEvent) -> dict[str, Any]:
    """The variables CEL expressions and templates see for ``event``."""
    context: dict[str, Any] = dict.fromkeys(_OPTIONAL_ATTRIBUTES)
    context.update(event.get_attributes())
    context["data"] = event.get_data()
    return context


# -- CEL: compile, evaluate, explain ----------------------------------------------------------------

_STRING = re.compile(r"""[rR]?(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", re.S)
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\s*\()?")
_KEYWORDS = frozenset({"true", "false", "null", "in"})


def _blank_strings(source: str) -> str:
    """The source with every string literal replaced by spaces (same length), for scanning."""
    return _STRING.sub(lambda m: " " * len(m.group(0)), source)


def _split(source: str, operator: str) -> list[str]:
    """Split at top-level ``&&`` or ``||`` (outside brackets and strings)."""
    blank = _blank_strings(source)
    parts: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(blank):
        char = blank[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and blank.startswith(operator, index):
            parts.append(source[start:index].strip())
            index += len(operator)
            start = index
            continue
        index += 1
    parts.append(source[start:].strip())
    return parts


def _strip_parens(source: str) -> str:
    """``(a && b)`` -> ``a && b`` when the outer parentheses enclose the whole expression."""
    while source.startswith("(") and source.endswith(")"):
        blank = _blank_strings(source)
        depth = 0
        for index, char in enumerate(blank):
            depth += char in "([{"
            depth -= char in ")]}"
            if depth == 0 and index < len(source) - 1:
                return source
        source = source[1:-1].strip()
    return source


#: In a :func:`reads` tree: the whole value is read.
WHOLE = None


def reads(source: str, variables: Iterable[str] = ()) -> dict[str, Any]:
    """What an expression reads, as a tree: variable -> field -> ... -> ``WHOLE``.

    Every dotted chain the expression selects is recorded down to its last field; whatever follows a
    chain (an index, a call, a comparison) works on that field's whole value. ``variables`` (the
    program's own list of names) are added whole unless the scan found them, as a safety net. Names
    that are not variables (comprehension bindings, functions) end up in the tree and are ignored."""
    tree: dict[str, Any] = {}

    def add(parts: list[str]) -> None:
        node = tree
        for part in parts[:-1]:
            child = node.get(part, {})
            if child is WHOLE:
                return
            node = node.setdefault(part, child)
        node[parts[-1]] = WHOLE

    for match in _PATH.finditer(_blank_strings(source)):
        parts = match.group(1).split(".")
        if match.group(2):  # a call: ``size(...)`` reads nothing itself, ``a.b.startsWith(...)`` reads a.b
            parts = parts[:-1]
        if parts and parts[0] not in _KEYWORDS:
            add(parts)
    for name in variables:
        if name not in tree:
            tree[name] = WHOLE
    return tree


def _merge(trees: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for tree in trees:
        for key, sub in tree.items():
            if key in merged and (merged[key] is WHOLE or sub is WHOLE):
                merged[key] = WHOLE
            elif key in merged:
                merged[key] = _merge([merged[key], sub])
            else:
                merged[key] = sub
    return merged


def _pruner(tree: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A function reducing a value to what ``tree`` reads (built once per route): absent fields stay
    absent (so errors and ``has()`` are unchanged), a value that is not a map is kept whole. Applied to
    the variables, it gives what CEL is handed."""
    fields = [(key, None if sub is WHOLE else _pruner(sub)) for key, sub in tree.items()]

    def prune(value: Any) -> Any:
        if type(value) is not dict:
            return value
        selected = {}
        for key, inner in fields:
            if key in value:
                selected[key] = value[key] if inner is None else inner(value[key])
        return selected

    return prune


def _paths(source: str, context: Mapping[str, Any]) -> list[str]:
    """The variable paths an expression reads (``data.repository.name``), in order of appearance."""
    found: list[str] = []
    for match in _PATH.finditer(_blank_strings(source)):
        path, call = match.group(1), match.group(2)
        if call:  # a function or a method: ``size(...)`` or ``data.name.startsWith(...)``
            if "." not in path:
                continue
            path = path.rsplit(".", 1)[0]
        if path.split(".", 1)[0] not in context or path in _KEYWORDS:
            continue
        if path not in found:
            found.append(path)
    return found


class _Missing:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.reason}>"

    def __str__(self) -> str:
        return f"<{self.reason}>"


def _evaluate(source: str, context: Mapping[str, Any]) -> Any:
    try:
        return cel.compile(source).execute(dict(context))
    except KeyError as exc:
        return _Missing(f"no field {exc.args[0]!r}")
    except (RuntimeError, TypeError, ValueError) as exc:
        return _Missing(str(exc).split(". ")[0])


def _explain(source: str, context: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The smallest sub-expression that made ``source`` false, and the values it read."""
    source = _strip_parens(source.strip())
    conjuncts = _split(source, "&&")
    if len(conjuncts) > 1:
        for part in conjuncts:
            if _evaluate(part, context) is not True:
                return _explain(part, context)
    # a disjunction that is false has every branch false: show them all; a leaf: show it
    return source, {path: _evaluate(path, context) for path in _paths(source, context)}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no field {exc.args[0]!r}"
    return str(exc).split("\n")[0]


# -- templates --------------------------------------------------------------------------------------

_TEMPLATES = jinja2.sandbox.ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)


_SIMPLE = re.compile(r"^\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\}\}$")
_EXPRESSION = re.compile(r"^\{\{[-+]?(.*?)[-+]?\}\}$", re.S)

#: Values a one-expression parameter keeps as they are (what JSON can hold); others render to text.
_NATIVE = (str, bool, int, float, list, tuple, dict, type(None))


def _one_expression(source: str) -> jinja2.environment.TemplateExpression | None:
    """The compiled expression when ``source`` is exactly one ``{{ ... }}`` and nothing else."""
    match = _EXPRESSION.match(source)
    if match is None:
        return None
    body = _TEMPLATES.parse(source).body
    if not (
        len(body) == 1
        and isinstance(body[0], jinja2.nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], jinja2.nodes.TemplateData)
    ):
        return None  # several outputs, text around the expression, or a statement
    try:
        return _TEMPLATES.compile_expression(match.group(1), undefined_to_none=False)
    except jinja2.TemplateSyntaxError:  # e.g. a comment inside the braces: render it as text
        return None


class _Template:
    """One compiled template. ``{{ a.b.c }}`` over plain JSON values (the common case) is looked up
    directly, with the same result as Jinja; anything else, or any doubt, is rendered by Jinja.

    ``native``: a template that is one expression evaluates to its value (:meth:`value`) rather than
    to text, when that value is JSON (see the module docstring)."""

    __slots__ = ("expression", "path", "template", "where")

    def __init__(self, source: str, where: str = "", *, native: bool = False) -> None:
        self.where = where  # e.g. params.labels.tag, for error messages
        self.template = _TEMPLATES.from_string(source)
        match = _SIMPLE.match(source)
        path = tuple(match.group(1).split(".")) if match else None
        # Jinja tries an attribute first: a key that is also a dict method (``data.items``) is not
        # plain. Known here once, rather than by a failed attribute look-up (an AttributeError, its
        # message formatted) for every key of every event.
        self.path = path if path is not None and not any(hasattr(dict, key) for key in path[1:]) else None
        self.expression = _one_expression(source) if native else None

    def _lookup(self, context: Mapping[str, Any]) -> Any:
        """The value of a plain ``{{ a.b.c }}`` over dicts, or ``_Template`` when Jinja must decide."""
        assert self.path is not None
        value: Any = context.get(self.path[0], _Template)
        for key in self.path[1:]:  # none of them a dict method (see __init__)
            if type(value) is not dict or key not in value:
                return _Template
            value = value[key]
        return value

    def render(self, context: Mapping[str, Any]) -> str:
        if self.path is not None:
            value = self._lookup(context)
            if isinstance(value, str):
                return value
            if value is None or type(value) in (bool, int, float):
                return str(value)
        return self.template.render(context)

    def value(self, context: Mapping[str, Any]) -> Any:
        """A native template's value (JSON types kept), else the rendered text."""
        if self.expression is None:
            return self.render(context)
        if self.path is not None:
            value = self._lookup(context)
            if value is not _Template and type(value) in _NATIVE:
                return value
        value = self.expression(context)
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()  # strict: the same error rendering would raise
        return value if type(value) in _NATIVE else str(value)


class _Templates:
    """A tree of compiled templates mirroring the params mapping; non-strings pass through."""

    def __init__(self, tree: Any) -> None:
        self.tree = self._compile(tree, "params")

    @classmethod
    def _compile(cls, node: Any, path: str) -> Any:
        if isinstance(node, str):
            return _Template(node, path, native=True) if ("{{" in node or "{%" in node) else node
        if isinstance(node, Mapping):
            return {key: cls._compile(value, f"{path}.{key}") for key, value in node.items()}
        if isinstance(node, list):
            return [cls._compile(value, f"{path}[{i}]") for i, value in enumerate(node)]
        return node

    def render(self, context: Mapping[str, Any]) -> Any:
        return self._render(self.tree, context)

    @classmethod
    def _render(cls, node: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(node, _Template):
            try:
                return node.value(context)
            except Exception as exc:  # undefined names, sandbox refusals, filter errors
                raise _RenderError(node.where, exc) from exc
        if isinstance(node, dict):
            return {key: cls._render(value, context) for key, value in node.items()}
        if isinstance(node, list):
            return [cls._render(value, context) for value in node]
        return node


class _RenderError(Exception):
    def __init__(self, path: str, cause: Exception) -> None:
        super().__init__(path)
        self.path = path
        self.cause = cause


def _render_error(exc: Exception) -> str:
    if isinstance(exc, _RenderError):
        cause = exc.cause
        if isinstance(cause, jinja2.UndefinedError):
            return f"{exc.path}: template: {cause.message}"
        if isinstance(cause, jinja2.exceptions.SecurityError):
            return f"{exc.path}: template: not allowed: {cause}"
        return f"{exc.path}: template: {type(cause).__name__}: {cause}"
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(
            f"params.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
    return f"{type(exc).__name__}: {exc}"


# -- compiled routes --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Compiled:
    """A route ready to evaluate: its CEL program, templates and handler."""

    route: Route
    program: cel.Program
    handler: contract.Handler
    params: _Templates
    ordering_key: _Template | None
    #: What the match expression reads (see :func:`reads`): only that is converted for CEL.
    reads: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: The templates of the other keys an invocation carries, by the field that names them.
    keys: Mapping[str, _Template] = dataclasses.field(default_factory=dict)
    #: Per budget (``route.budgets``), its key template (None: one budget for the route).
    budget_keys: tuple[_Template | None, ...] = ()
    #: ``approval.when``, compiled (None: no approval).
    approval_when: cel.Program | None = None
    select: Callable[[Any], Any] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "select", _pruner(self.reads))

    @property
    def name(self) -> str:
        return self.route.name

    def matches(
        self, context: Mapping[str, Any], activation: cel.Context | None = None
    ) -> tuple[bool, str | None]:
        """Whether the event matches, and the evaluation error if it could not be evaluated.
        ``activation``: ``context`` already converted for CEL (shared by the routes of one event)."""
        try:
            if activation is None:
                result = self.program.execute(self.select(context))
            else:
                result = self.program.execute(activation)
        except Exception as exc:  # the CEL binding raises KeyError/RuntimeError/TypeError on bad data
            return False, _error_text(exc)
        if not isinstance(result, bool):
            return False, f"match must yield a bool, got {type(result).__name__}"
        return result, None

    def rail_keys(self, event: events.CloudEvent) -> list[str]:
        """The rendered key of each budget for ``event`` (``""`` for a budget without a key). A key
        that cannot be rendered counts under ``!error``, so a bad template still limits the route."""
        if not self.budget_keys:
            return []
        context = context_of(event)
        keys: list[str] = []
        for template in self.budget_keys:
            if template is None:
                keys.append("")
                continue
            try:
                keys.append(str(template.render(context)))
            except Exception:  # the same failures as params; the route still stays within a budget
                keys.append("!error")
        return keys

    def needs_approval(self, event: events.CloudEvent) -> bool:
        """Whether ``approval.when`` holds for ``event`` (an error in it: approval is asked, to be safe)."""
        if self.approval_when is None:
            return False
        try:
            result = self.approval_when.execute(context_of(event))
        except Exception:  # the CEL binding raises KeyError/RuntimeError/TypeError on bad data
            return True
        return result is not False

    def render(
        self, context: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, str], str | None, str | None]:
        """(validated params as JSON-able dict, the rendered keys by field, error, what failed:
        params or the field of a key: orderingKey, concurrencyGroup, coalesce, rateLimit)."""
        keys: dict[str, str] = {}
        try:
            rendered = self.params.render(context)
            model = self.handler.params.model_validate(rendered)
            templates = dict(self.keys)
            if self.ordering_key is not None:
                templates["orderingKey" if self.route.ordering_key is not None else "concurrencyGroup"] = (
                    self.ordering_key
                )
            for field, template in templates.items():
                try:
                    keys[field] = template.render(context)
                except Exception as exc:  # same failures as params
                    raise _RenderError(field, exc) from exc
        except Exception as exc:  # template and validation errors become a reason, never a crash
            failed = exc.path if isinstance(exc, _RenderError) and exc.path in _KEY_FIELDS else "params"
            return None, {}, _render_error(exc), failed
        return model.model_dump(mode="json", by_alias=True), keys, None, None

    def decide(
        self, context: dict[str, Any], *, explain: bool = False, activation: cel.Context | None = None
    ) -> Decision:
        name, handler, enabled = self.name, self.handler.name, self.route.enabled
        matched, error = self.matches(context, activation)
        failed = None if error is None else "match"
        if not matched:
            if not explain:
                return Decision(name, handler, enabled, False, error=error, failed=failed)
            condition, values = _explain(self.route.match, context)
            return Decision(
                name, handler, enabled, False, condition=condition, values=values, error=error, failed=failed
            )
        params, keys, params_error, failed = self.render(context)
        return Decision(
            name,
            handler,
            enabled,
            True,
            params=params,
            params_error=params_error,
            ordering_key=keys.get("orderingKey", keys.get("concurrencyGroup")),
            failed=failed,
            coalesce_key=keys.get("coalesce"),
            rate_key=keys.get("rateLimit"),
        )


class Router:
    """The routes of one configuration, compiled."""

    def __init__(self, routes: Sequence[Compiled]) -> None:
        self.routes = list(routes)
        self.by_name = {route.name: route for route in self.routes}
        #: Routes that read the event's object before matching (see glue.enrich), by name.
        self.enriched = {r.name: r.route.enrich for r in self.routes if r.route.enrich is not None}
        #: Whether some route coalesces or supersedes: its invocations are decided in a routing pass.
        self.shaping = any(
            r.route.coalesce is not None
            or (r.route.group is not None and r.route.group.on_conflict in ("supersede", "cancel"))
            for r in self.routes
        )
        #: What some route's match reads: converted once per event, shared by the routes.
        self.reads = _merge(route.reads for route in self.routes)
        self._select = _pruner(self.reads)
        self._errors = metrics.Children(metrics.ROUTE_ERRORS)
        self._error_logged: dict[str, float] = {}  # route -> monotonic time of its last error line
        self._errors_unlogged: dict[str, int] = {}

    def _failed(self, decision: Decision, route: Route, event: events.CloudEvent) -> None:
        """Count an expression that failed on an event; log it at most once per route a minute."""
        kind = decision.failed
        assert kind is not None
        self._errors[decision.route, kind].inc()
        now = time.monotonic()
        last = self._error_logged.get(decision.route)
        if last is not None and now - last < ERROR_LOG_SECONDS:
            self._errors_unlogged[decision.route] = self._errors_unlogged.get(decision.route, 0) + 1
            return
        self._error_logged[decision.route] = now
        group = route.group
        expression = {
            "match": route.match,
            "orderingKey": route.ordering_key,
            "concurrencyGroup": group.key if group is not None else None,
            "coalesce": route.coalesce.key if route.coalesce is not None else None,
            "rateLimit": route.rate_limit.key if route.rate_limit is not None else None,
        }.get(kind, route.params)
        log.warning(
            "route expression failed",
            route=decision.route,
            kind=kind,
            expression=expression,
            error=decision.error if kind == "match" else decision.params_error,
            event_id=event.get_id(),
            not_logged_since=self._errors_unlogged.pop(decision.route, 0),
        )

    def decide(
        self,
        event: events.CloudEvent,
        *,
        explain: bool = False,
        only: Iterable[str] | None = None,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Decision]:
        """One decision per route (or per route named in ``only``), in configuration order.
        ``extra``: per route name, variables added to what its expressions see (enrichment)."""
        context = context_of(event)
        selected = set(only) if only is not None else None
        chosen = [route for route in self.routes if selected is None or route.name in selected]
        plain = [route for route in chosen if not (extra and route.name in extra)]
        activation = self._activation(context) if len(plain) > 1 else None
        return [
            route.decide({**context, **extra[route.name]}, explain=explain)
            if extra and route.name in extra
            else route.decide(context, explain=explain, activation=activation)
            for route in chosen
        ]

    def _activation(self, context: Mapping[str, Any]) -> cel.Context | None:
        """``context`` converted for CEL once; None when a value cannot be (each route then reports
        its own error, and routes that do not read that value are unaffected)."""
        try:
            return cel.Context(self._select(context))
        except (ValueError, TypeError, RuntimeError):
            return None

    def invocations(
        self,
        stored: journal.StoredEvent,
        *,
        now: float,
        event: events.CloudEvent | None = None,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
        only: Iterable[str] | None = None,
    ) -> list[journal.NewInvocation]:
        """What to persist for a journaled event: one invocation per enabled route that matched
        (of the routes named in ``only``, when given).

        A route whose parameters cannot be rendered yields a dead invocation with the reason, so the
        failure is visible in the dead-letter queue rather than lost. ``event`` is ``stored`` parsed,
        when the caller has it already."""
        event = event if event is not None else stored.event()
        return self.invocations_of(stored.identity, event, now=now, extra=extra, only=only)

    def invocations_of(
        self,
        identity: str,
        event: events.CloudEvent,
        *,
        now: float,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
        only: Iterable[str] | None = None,
    ) -> list[journal.NewInvocation]:
        """:meth:`invocations` of an event known by its identity (before it is journaled)."""
        result: list[journal.NewInvocation] = []
        for decision in self.decide(event, extra=extra, only=only):
            if not decision.enabled:
                continue
            if decision.failed is not None:
                self._failed(decision, self.by_name[decision.route].route, event)
            if not decision.matched:
                continue
            result.append(self._invocation(identity, decision, now))
        return result

    def _invocation(self, identity: str, decision: Decision, now: float) -> journal.NewInvocation:
        """What to persist for one matched route: keys scoped by the route (routes share none)."""
        compiled = self.by_name[decision.route]
        route = compiled.route
        group, rule = route.group, route.coalesce
        coalesce = None
        if rule is not None and decision.coalesce_key is not None:
            coalesce = journal.Coalesce(
                key=f"{decision.route} {decision.coalesce_key}",
                window=rule.window,
                max_wait=rule.longest,
                edge=rule.edge,
            )
        rate_key = None
        if route.rate_limit is not None:
            rate_key = (
                decision.route if decision.rate_key is None else f"{decision.route} {decision.rate_key}"
            )
        return journal.NewInvocation(
            route=decision.route,
            handler=decision.handler,
            idempotency_key=journal.idempotency_key(identity, decision.route),
            params=decision.params or {},
            due_at=now,
            ordering_key=(
                None if decision.ordering_key is None else f"{decision.route} {decision.ordering_key}"
            ),
            state="dead" if decision.params_error is not None else "pending",
            error=decision.params_error,
            conflict=group.on_conflict if group is not None and decision.ordering_key is not None else None,
            cancel_done=compiled.handler.cancel is not None,
            coalesce=coalesce,
            rate_key=rate_key,
        )


#: The fields of a route whose key template can fail on an event (a kind of ``glue_route_errors_total``).
_KEY_FIELDS = ("orderingKey", "concurrencyGroup", "coalesce", "rateLimit")


def _key_sources(route: Route) -> list[tuple[str, str]]:
    """The key templates a route sets, by the field that holds them."""
    found: list[tuple[str, str]] = []
    if route.ordering_key is not None:
        found.append(("orderingKey", route.ordering_key))
    if route.concurrency_group is not None:
        found.append(("concurrencyGroup", route.concurrency_group.key))
    if route.coalesce is not None:
        found.append(("coalesce", route.coalesce.key))
    if route.rate_limit is not None and route.rate_limit.key is not None:
        found.append(("rateLimit", route.rate_limit.key))
    return found


def _check_params(route: Route, handler: contract.Handler) -> list[tuple[str, str]]:
    """Literal (template-free) params are validated now; keys unknown to the model are always caught."""
    problems: list[tuple[str, str]] = []
    fields = handler.params.model_fields
    known = set(fields) | {info.alias for info in fields.values() if info.alias}
    if handler.params.model_config.get("extra") == "forbid":
        for key in route.params:
            if key not in known:
                problems.append((f"params.{key}", f"not a parameter of handler {handler.name!r}"))
    for name, info in fields.items():
        key = info.alias or name
        if info.is_required() and name not in route.params and key not in route.params:
            problems.append((f"params.{key}", f"required by handler {handler.name!r}"))
        value = route.params.get(key, route.params.get(name))
        if isinstance(value, dict) and _literal(value):  # a literal group, e.g. auth: {...}
            annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
            try:
                adapter.validate_python(value)
            except pydantic.ValidationError as exc:
                problems += _model_problems(exc, f"params.{key}")
    if not problems and _literal(route.params):  # nothing to render: the handler's model decides now
        try:
            handler.params.model_validate(route.params)
        except pydantic.ValidationError as exc:
            problems += _model_problems(exc, "params")
    return problems


def _model_problems(exc: pydantic.ValidationError, where: str) -> list[tuple[str, str]]:
    """A model's refusal as (field, message) problems: the message only, never the value."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        problems.append((f"{where}.{loc}" if loc else where, error["msg"]))
    return problems


def _literal(value: Any) -> bool:
    """Whether a params tree holds no template at all (then it is checked when the config loads)."""
    if isinstance(value, str):
        return not any(mark in value for mark in ("{{", "{%", "{#"))
    if isinstance(value, Mapping):
        return all(_literal(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_literal(item) for item in value)
    return True


def _compile_rails(
    route: Route, where: str, problems: list[tuple[str, str]]
) -> tuple[tuple[_Template | None, ...], cel.Program | None]:
    """The budget key templates and the approval's CEL of ``route``; problems are appended."""
    keys: list[_Template | None] = []
    for index, budget in enumerate(route.budgets):
        if budget.key is None:
            keys.append(None)
            continue
        try:
            keys.append(_Template(budget.key))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                (f"{where}.budget.{index}.key", f"template syntax: {exc.message} (line {exc.lineno})")
            )
    when: cel.Program | None = None
    if route.approval is not None:
        try:
            when = cel.compile(route.approval.when)
        except (ValueError, RuntimeError) as exc:
            problems.append((f"{where}.approval.when", f"not valid CEL: {str(exc).splitlines()[0]}"))
    return tuple(keys), when


def load(
    raw: Sequence[Mapping[str, Any]], registry: contract.Registry, *, source: str = "<config>"
) -> Router:
    """Validate and compile ``settings.routes``. Raises settings.ConfigError listing every problem."""
    problems: list[tuple[str, str]] = []
    compiled: list[Compiled] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        where = f"routes[{index}]"
        try:
            route = Route.model_validate(item)
        except pydantic.ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = ".".join(str(part) for part in error["loc"])
                problems.append((f"{where}.{loc}" if loc else where, error["msg"]))
            continue
        where = f"routes[{index}] ({route.name})"
        if route.name in names:
            problems.append((f"{where}.name", "another route has this name"))
        names.add(route.name)
        program: cel.Program | None = None
        try:
            program = cel.compile(route.match)
        except (ValueError, RuntimeError) as exc:
            problems.append((f"{where}.match", f"not valid CEL: {str(exc).splitlines()[0]}"))
        try:
            handler = registry.get(route.handler)
        except KeyError as exc:
            problems.append((f"{where}.handler", str(exc.args[0])))
            continue
        templates: _Templates | None = None
        key: _Template | None = None
        keys: dict[str, _Template] = {}
        try:
            templates = _Templates(route.params)
        except jinja2.TemplateSyntaxError as exc:
            problems.append((f"{where}.params", f"template syntax: {exc.message} (line {exc.lineno})"))
        for field, text in _key_sources(route):
            try:
                if field in ("orderingKey", "concurrencyGroup"):
                    key = _Template(text, field)
                else:
                    keys[field] = _Template(text, field)
            except jinja2.TemplateSyntaxError as exc:
                where_key = f"{where}.{field}" + ("" if field == "orderingKey" else ".key")
                problems.append((where_key, f"template syntax: {exc.message} (line {exc.lineno})"))
        problems.extend((f"{where}.{field}", reason) for field, reason in _check_params(route, handler))
        budget_keys, approval_when = _compile_rails(route, where, problems)
        if program is not None and templates is not None:
            compiled.append(
                Compiled(
                    route,
                    program,
                    handler,
                    templates,
                    key,
                    reads(route.match, program.variables()),
                    keys,
                    budget_keys=budget_keys,
                    approval_when=approval_when,
                )
            )
    if problems:
        raise settings.ConfigError(source, problems)
    return Router(compiled)
