"""OpenBao: secret rotations that rotate once per event and never reveal a value.

Four handlers, each one rotation:

- ``openbao.kv.rotate``: a new value for one field of a KV v2 secret (a password from a declared policy,
  or random bytes in base64), written with ``cas`` = the version read, the other fields kept. Before the
  write, the secret's custom metadata records which invocation is rotating it (a digest of the
  idempotency key, the event identity) and from which version; a replay that finds its own mark and a
  newer version knows the rotation happened and does not write again. The mark is written with
  ``metadata_cas`` = the ``current_metadata_version`` read (OpenBao 2.4 and later:
  ``internal/builtin/logical/kv/path_metadata.go``; required when the mount or the secret sets
  ``metadata_cas_required``, ``path_config.go``), so another client's custom metadata written in between
  is never overwritten: the rotation reads again and keeps it. Older servers ignore ``metadata_cas`` and
  report no metadata version. A write refused on check-and-set is
  either ours whose answer was lost (the client repeated it) or another writer's: the version after the
  one read is compared with the value just generated, in memory; if it is not ours, the rotation starts
  again from the read. (KV v2 cannot attach metadata to the write itself, so a replay that finds its mark
  and a newer version written by someone else in between takes that version as the rotation.)
- ``openbao.database.rotate-role`` / ``openbao.database.rotate-root``: the database engine's rotations.
- ``openbao.transit.rotate``: a new transit key version.

The last three rotate again on every call. They are guarded by a ledger entry in KV v2 (``clients.openbao
.ledger``), one per invocation and target, written with ``cas: 0`` before the call and marked done after
it, together with what the rotation changes (the key's ``latest_version``, the role's
``last_vault_rotation``). A replay that finds a done entry does nothing; one that finds an unfinished entry
and a changed target knows its earlier call took effect. rotate-root changes nothing observable, so a call
whose answer was lost is made again on replay (the new root password is known only to OpenBao, so a second
rotation costs nothing but the rotation itself).

After the rotation, the route's ``restart`` follow-ups roll workloads (``kubectl rollout restart``) with
``restartedAt`` set to the time of the new version and the version itself in a pod-template annotation:
a replay after a failed follow-up repeats only the follow-up, and one after success changes nothing.

No secret value reaches a log line, an error, a plan or the journal: plans name paths, versions and the
shape of what would be generated; errors carry OpenBao's messages with written values masked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import secrets
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal

import pydantic
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubernetes, openbao_client

__all__ = [
    "CLIENT",
    "DATABASE_ROLE_POLICY",
    "DATABASE_ROOT_POLICY",
    "KV_POLICY",
    "LEDGER_POLICY",
    "TRANSIT_POLICY",
    "DatabaseRoleParams",
    "DatabaseRootParams",
    "KvParams",
    "PasswordPolicy",
    "RandomBytes",
    "Restart",
    "TransitParams",
    "generate",
    "open_client",
]

CLIENT = "openbao"

#: Custom-metadata keys of a KV v2 secret being rotated (values are strings, at most 512 characters).
MARK_KEY = "runtime-glue.rotation-key"  # sha256 of the invocation's idempotency key
MARK_EVENT = "runtime-glue.rotation-event"  # the event identity, for the operator
MARK_FROM = "runtime-glue.rotation-from"  # the version the rotation replaces
#: Pod-template annotation naming the rotated version a restart follows.
ANNOTATION_VERSION = kubernetes.ANNOTATION_PREFIX + "openbao-version"

#: Rounds of read -> write against concurrent writers before giving the attempt up.
CAS_ROUNDS = 5

CHARSETS = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
    "symbols": "!#$%&()*+,-./:;<=>?@[]^_{|}~",
}

_PATH = r"^[A-Za-z0-9_.@-]+(/[A-Za-z0-9_.@-]+)*$"
_NAME = r"^[A-Za-z0-9_.@-]+$"


def _describe(config: openbao_client.Config) -> str:
    """The OpenBao address, namespace and auth method (no credential)."""
    auth = config.auth
    how = f"auth {auth.method}" + (
        f" role {auth.role}" if isinstance(auth, openbao_client.KubernetesAuth) else ""
    )
    namespace = f", namespace {config.namespace}" if config.namespace else ""
    return f"{config.address} ({how}{namespace})"


#: How long one health check of OpenBao may take, retries of an unavailable server included.
PROBE_SECONDS = 10.0


async def probe(bao: openbao_client.OpenBao, needs: glue.Needs) -> str | None:
    """Whether OpenBao takes the configured login and the token it gives (``auth/token/lookup-self``,
    which the default policy grants): None, or why not (unreachable, sealed, the login refused)."""
    deadline = asyncio.get_running_loop().time() + PROBE_SECONDS
    try:
        await bao.request("GET", "auth/token/lookup-self", deadline=deadline)
    except openbao_client.OpenBaoError as exc:
        return str(exc)
    except ValueError as exc:  # a credential file that cannot be read
        return str(exc)
    return None


@glue.client(CLIENT, config=openbao_client.Config, describe=_describe, probe=probe)
@contextlib.asynccontextmanager
async def open_client(config: Any) -> AsyncIterator[openbao_client.OpenBao]:
    """The shared OpenBao client (settings ``clients.openbao``), closed when the daemon stops."""
    settings = (
        config if isinstance(config, openbao_client.Config) else openbao_client.Config.model_validate(config)
    )
    async with openbao_client.OpenBao(settings) as bao:
        yield bao


# --------------------------------------------------------------------------------------------- params


def _no_dot_segments(value: str) -> str:
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError("must not contain . or .. segments")
    return value


class Charset(kubernetes.Params):
    """Characters a password draws from: a name (lower, upper, digits, symbols) or the characters."""

    charset: str = pydantic.Field(min_length=1)
    min_chars: int = pydantic.Field(default=0, ge=0, description="At least this many from this set.")

    @pydantic.field_validator("charset")
    @classmethod
    def _expand(cls, value: str) -> str:
        value = CHARSETS.get(value, value)
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("a charset holds printable characters without spaces")
        return "".join(dict.fromkeys(value))


class PasswordPolicy(kubernetes.Params):
    """A password of ``length`` characters, with at least ``minChars`` from each rule's charset."""

    type: Literal["password"] = "password"
    length: int = pydantic.Field(default=32, ge=8, le=1024)
    rules: tuple[Charset, ...] = pydantic.Field(
        default=(
            Charset(charset="lower", min_chars=1),
            Charset(charset="upper", min_chars=1),
            Charset(charset="digits", min_chars=1),
        ),
        min_length=1,
    )

    @pydantic.model_validator(mode="after")
    def _fits(self) -> PasswordPolicy:
        if sum(rule.min_chars for rule in self.rules) > self.length:
            raise ValueError("the rules ask for more characters than length")
        return self

    def describe(self) -> str:
        return f"<generated password, {self.length} characters>"


class RandomBytes(kubernetes.Params):
    """``bytes`` random bytes, base64 encoded (standard or URL-safe alphabet)."""

    type: Literal["bytes"]
    bytes: int = pydantic.Field(default=32, ge=16, le=4096)
    encoding: Literal["base64", "base64url"] = "base64"

    def describe(self) -> str:
        return f"<generated {self.bytes} random bytes, {self.encoding}>"


Generator = Annotated[PasswordPolicy | RandomBytes, pydantic.Field(discriminator="type")]


def generate(spec: PasswordPolicy | RandomBytes) -> str:
    """A new secret value from the operating system's CSPRNG."""
    if isinstance(spec, RandomBytes):
        raw = secrets.token_bytes(spec.bytes)
        encoded = base64.urlsafe_b64encode(raw) if spec.encoding == "base64url" else base64.b64encode(raw)
        return encoded.decode()
    chars = [secrets.choice(rule.charset) for rule in spec.rules for _ in range(rule.min_chars)]
    alphabet = "".join(dict.fromkeys("".join(rule.charset for rule in spec.rules)))
    chars += [secrets.choice(alphabet) for _ in range(spec.length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


class Restart(kubernetes.RestartParams):
    """A workload to roll once the new version exists."""


class Rotation(kubernetes.Params):
    restart: tuple[Restart, ...] = pydantic.Field(default=(), description="Workloads to restart afterwards.")


class KvParams(Rotation):
    """``openbao.kv.rotate``: which secret and field, and how to generate the value."""

    mount: str = pydantic.Field(default="secret", pattern=_PATH, description="The KV v2 engine's mount.")
    path: str = pydantic.Field(pattern=_PATH, description="The secret's path under the mount.")
    field: str = pydantic.Field(
        default="password", min_length=1, max_length=256, description="The field given a new value."
    )
    generate: Generator = pydantic.Field(
        default=PasswordPolicy(), description="How the value is made: a password policy or random bytes."
    )
    create: bool = pydantic.Field(default=False, description="Create the secret when it does not exist.")

    _paths = pydantic.field_validator("mount", "path")(_no_dot_segments)


class DatabaseRoleParams(Rotation):
    """``openbao.database.rotate-role``: the static role whose password to rotate."""

    mount: str = pydantic.Field(default="database", pattern=_PATH, description="The database engine's mount.")
    role: str = pydantic.Field(pattern=_NAME, description="The static role.")

    _paths = pydantic.field_validator("mount", "role")(_no_dot_segments)


class DatabaseRootParams(Rotation):
    """``openbao.database.rotate-root``: the connection whose root credential to rotate."""

    mount: str = pydantic.Field(default="database", pattern=_PATH, description="The database engine's mount.")
    connection: str = pydantic.Field(pattern=_NAME, description="The connection (database/config/NAME).")

    _paths = pydantic.field_validator("mount", "connection")(_no_dot_segments)


class TransitParams(Rotation):
    """``openbao.transit.rotate``: the transit key to rotate."""

    mount: str = pydantic.Field(default="transit", pattern=_PATH, description="The transit engine's mount.")
    key: str = pydantic.Field(pattern=_NAME, description="The transit key.")

    _paths = pydantic.field_validator("mount", "key")(_no_dot_segments)


# --------------------------------------------------------------------------------------------- helpers


def _identity(event: CloudEvent) -> str:
    return f"{event.get_source()} {event.get_id()}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """OpenBao failures as the executor's outcomes: "not now" retries, refusals dead-letter."""
    try:
        yield
    except openbao_client.Unavailable as exc:
        raise glue.TemporaryError(f"{what}: {exc}") from None
    except openbao_client.OpenBaoError as exc:
        if exc.status is None or exc.status in (400, 403, 404, 405):
            raise glue.PermanentError(f"{what}: {exc}") from None
        raise glue.TemporaryError(f"{what}: {exc}") from None


async def _client(ctx: glue.Context) -> openbao_client.OpenBao | None:
    """The shared client; in dry-run, None when it cannot be opened (the plan is then not checked)."""
    try:
        with _errors("open the OpenBao client"):
            try:
                bao: openbao_client.OpenBao = await ctx.clients.get(CLIENT)
            except pydantic.ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                raise glue.PermanentError(f"clients.{CLIENT} is not valid: {problems}") from None
            return bao
    except (glue.PermanentError, glue.TemporaryError):
        if ctx.dry_run:
            return None
        raise


def _rfc3339(value: Any) -> str:
    """A version's time as kubectl writes ``restartedAt`` (UTC, seconds); '' when unknown."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = datetime.datetime.fromtimestamp(value, datetime.UTC)
    elif isinstance(value, str) and value:
        text = value.rstrip("Z")
        if "." in text:  # OpenBao writes nanoseconds; Python parses up to microseconds
            head, _, fraction = text.partition(".")
            digits = "".join(c for c in fraction if c.isdigit())
            text = f"{head}.{digits[:6]}{fraction[len(digits) :]}"
        try:
            when = datetime.datetime.fromisoformat(text + ("+00:00" if value.endswith("Z") else ""))
        except ValueError:
            return ""
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
    else:
        return ""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _follow_ups(
    ctx: glue.Context, event: CloudEvent, restarts: tuple[Restart, ...], version: str, when: str
) -> list[glue.Call]:
    """Roll the route's workloads for this version. Returns the calls made (or planned, in dry-run)."""
    if not restarts:
        return []
    value = when or f"openbao-{_digest(version)[:16]}"
    api = await kubernetes.client(ctx)
    calls: list[glue.Call] = []
    for target in restarts:
        if api is None:  # dry-run without a cluster
            calls.append(
                _restart_call(target, version, value, note=f"rollout restart ({kubernetes.UNCHECKED})")
            )
            continue
        result = await kubernetes.rollout_restart(
            api,
            target.kind,
            target.namespace,
            target.name,
            value,
            annotations=kubernetes.event_annotations(event),
            template_annotations={ANNOTATION_VERSION: version},
            dry_run=ctx.dry_run,
            wait_for_target=target.wait_for_target,
            per_request=kubernetes.request_timeout(api, ctx),
        )
        if result.changed:
            calls.append(result.call)
        if not ctx.dry_run:
            ctx.log.info(
                "rollout restart after rotation",
                target=f"{target.kind} {target.namespace}/{target.name}",
                version=version,
                changed=result.changed,
            )
    return calls


# --------------------------------------------------------------------------------------------- KV v2


def _kv_done(meta: dict[str, Any] | None, key: str) -> int | None:
    """The version this invocation wrote, if its mark is on the secret and a newer version exists."""
    if not meta:
        return None
    custom = meta.get("custom_metadata") or {}
    if custom.get(MARK_KEY) != key:
        return None
    try:
        start = int(custom.get(MARK_FROM, ""))
    except ValueError:
        return None
    return start + 1 if int(meta.get("current_version") or 0) > start else None


def _metadata_version(meta: dict[str, Any] | None) -> int:
    """The metadata version to check-and-set against: 0 for a secret without metadata, or one whose
    metadata no metadata write has touched, or a server before 2.4 (which does not report it)."""
    return int((meta or {}).get("current_metadata_version") or 0)


def _version_time(meta: dict[str, Any] | None, version: int) -> str:
    versions = (meta or {}).get("versions") or {}
    return _rfc3339((versions.get(str(version)) or {}).get("created_time"))


async def _kv_rotate(
    bao: openbao_client.OpenBao, params: KvParams, identity: str, key: str, deadline: float | None
) -> tuple[int, str, bool]:
    """Rotate once; returns (version, its creation time, whether an earlier attempt had done it)."""
    where = f"{params.mount}/{params.path}"
    for round_ in range(CAS_ROUNDS):
        meta = await bao.kv_metadata(params.mount, params.path, deadline=deadline)
        if meta is None and not params.create:
            raise glue.PermanentError(f"KV secret {where} does not exist (set create: true to create it)")
        if round_ == 0:
            # A replay: our mark with a newer version means an earlier attempt wrote it. (Later rounds know
            # better: they follow a refused write whose newer version was compared with what we wrote.)
            done = _kv_done(meta, key)
            if done is not None:
                return done, _version_time(meta, done), True
        current = int((meta or {}).get("current_version") or 0)
        custom = dict((meta or {}).get("custom_metadata") or {})
        # Say who is rotating and from where before writing: a replay then recognises its own version.
        custom.update({MARK_KEY: key, MARK_EVENT: identity[:512], MARK_FROM: str(current)})
        try:
            await bao.kv_write_metadata(
                params.mount,
                params.path,
                custom_metadata=custom,
                metadata_cas=_metadata_version(meta),
                deadline=deadline,
            )
        except openbao_client.OpenBaoError as exc:
            if not exc.metadata_cas_mismatch:
                raise
            continue  # another client wrote the metadata since our read: read again, keep what it wrote
        data: dict[str, Any] = {}
        if current:
            found = await bao.kv_read(params.mount, params.path, version=current, deadline=deadline)
            if found is not None:
                data = found[0]
        value = generate(params.generate)
        data[params.field] = value
        try:
            written = await bao.kv_write(params.mount, params.path, data, cas=current, deadline=deadline)
        except openbao_client.OpenBaoError as exc:
            if not exc.cas_mismatch:
                raise
            # Either our write took effect and its answer was lost (the client's retry was refused), or
            # another writer got there first. The version after ours tells: compare it with our value.
            found = await bao.kv_read(params.mount, params.path, version=current + 1, deadline=deadline)
            if found is not None and found[0].get(params.field) == value:
                return current + 1, _rfc3339(found[1].get("created_time")), False
            continue  # another writer: read again and rotate on top of its version
        finally:
            data.clear()
        version = int(written.get("version") or current + 1)
        return version, _rfc3339(written.get("created_time")), False
    raise glue.TemporaryError(f"KV secret {where}: still changing under us after {CAS_ROUNDS} rounds")


#: What the restart follow-ups need in Kubernetes (OpenBao's own policy is outside Kubernetes RBAC):
#: the restart handler's rules, once per workload of ``restart``, for its kind in its namespace (a
#: rotation that restarts nothing needs no Kubernetes RBAC).
RBAC = [dataclasses.replace(rule, each="restart") for rule in kubernetes.RESTART_RBAC]


#: What each rotation needs of OpenBao's policy (``glue handlers``, ``glue policy openbao``).
KV_POLICY = (
    glue.PolicyPath("{mount}/metadata/{path}", ("read", "create", "update")),
    glue.PolicyPath("{mount}/data/{path}", ("read", "create", "update")),
)
LEDGER_POLICY = (glue.PolicyPath("{ledger}/*", ("read", "create", "update")),)
DATABASE_ROLE_POLICY = (
    glue.PolicyPath("{mount}/static-roles/{role}", ("read",)),
    glue.PolicyPath("{mount}/rotate-role/{role}", ("update",)),
    *LEDGER_POLICY,
)
DATABASE_ROOT_POLICY = (glue.PolicyPath("{mount}/rotate-root/{connection}", ("update",)), *LEDGER_POLICY)
TRANSIT_POLICY = (
    glue.PolicyPath("{mount}/keys/{key}", ("read",)),
    glue.PolicyPath("{mount}/keys/{key}/rotate", ("update",)),
    *LEDGER_POLICY,
)


@glue.handler(
    "openbao.kv.rotate", params=KvParams, rbac=RBAC, clients=[CLIENT, "kubernetes"], openbao=KV_POLICY
)
async def kv_rotate(*, event: CloudEvent, params: KvParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """Write a new value for a KV v2 secret field, once per event, then restart its consumers."""
    where = f"{params.mount}/{params.path}"
    key = _digest(ctx.idempotency_key)
    identity = _identity(event)
    if ctx.dry_run:
        return await _kv_plan(event, params, ctx, key, identity)
    bao = await _client(ctx)
    assert bao is not None
    with _errors(f"rotate KV secret {where}"):
        version, when, replay = await _kv_rotate(bao, params, identity, key, ctx.deadline)
    ctx.log.info(
        "secret rotated" if not replay else "secret already rotated by this event",
        kind="kv",
        path=where,
        field=params.field,
        version=version,
    )
    await _follow_ups(ctx, event, params.restart, f"{where}@{version}", when)
    return None


async def _kv_plan(
    event: CloudEvent, params: KvParams, ctx: glue.Context, key: str, identity: str
) -> glue.Plan:
    where = f"{params.mount}/{params.path}"
    bao = await _client(ctx)
    meta: dict[str, Any] | None = None
    known = False
    if bao is not None:
        with contextlib.suppress(openbao_client.OpenBaoError):
            meta = await bao.kv_metadata(params.mount, params.path, deadline=ctx.deadline)
            known = True
    if known and meta is None and not params.create:
        return glue.Plan(
            [], summary=f"KV secret {where} does not exist and create is false: would dead-letter"
        )
    done = _kv_done(meta, key)
    if done is not None:
        restarts = await _follow_ups(ctx, event, params.restart, f"{where}@{done}", _version_time(meta, done))
        return glue.Plan(restarts, summary=f"{where} is already at version {done} for this event: no write")
    current: Any = int((meta or {}).get("current_version") or 0) if known else "<current version>"
    metadata_cas: Any = _metadata_version(meta) if known else "<current metadata version>"
    new = current + 1 if isinstance(current, int) else "<current version + 1>"
    calls = [
        glue.Call("GET", f"/v1/{params.mount}/metadata/{params.path}", note="read the current version"),
        glue.Call(
            "POST",
            f"/v1/{params.mount}/metadata/{params.path}",
            body={
                "custom_metadata": {MARK_KEY: key, MARK_EVENT: identity[:512], MARK_FROM: str(current)},
                "metadata_cas": metadata_cas,
            },
            note="mark the rotation (existing custom metadata kept; check-and-set on the metadata version)",
        ),
    ]
    if current != 0:
        calls.append(
            glue.Call(
                "GET",
                f"/v1/{params.mount}/data/{params.path}?version={current}",
                note="keep the other fields",
            )
        )
    calls.append(
        glue.Call(
            "POST",
            f"/v1/{params.mount}/data/{params.path}",
            body={"options": {"cas": current}, "data": {params.field: params.generate.describe()}},
            note=f"check-and-set write of version {new}",
        )
    )
    for target in params.restart:
        calls.append(_restart_call(target, f"{where}@{new}"))
    checked = "" if known else " (OpenBao not reachable: versions not checked)"
    return glue.Plan(calls, summary=f"rotate {params.field} of {where} to version {new}{checked}")


def _restart_call(
    target: Restart, version: str, value: str = "<creation time of the new version>", note: str = ""
) -> glue.Call:
    annotations = {kubernetes.RESTARTED_AT: value, ANNOTATION_VERSION: version}
    return glue.Call(
        "PATCH",
        kubernetes.path("apps", "v1", target.kind.lower() + "s", target.namespace, target.name),
        body={"spec": {"template": {"metadata": {"annotations": annotations}}}},
        note=note or "rollout restart after the rotation",
    )


# --------------------------------------------------------------------------------------------- ledger


Observe = Callable[[], Awaitable[tuple[str, str] | None]]  # (marker of the current state, its time)


def _ledger_path(ledger: openbao_client.Ledger, ctx: glue.Context, kind: str, target: str) -> str:
    """One ledger entry per invocation and target (the digest keeps event ids out of the path)."""
    return f"{ledger.prefix}/{_digest(ctx.idempotency_key, kind, target)[:40]}"


def _version_label(ctx: glue.Context, kind: str, target: str, after: str) -> str:
    """What a restart names as the version it follows; per invocation when nothing changes visibly."""
    return f"{target}@{after or _digest(ctx.idempotency_key, kind, target)[:16]}"


async def _guarded(
    bao: openbao_client.OpenBao,
    ctx: glue.Context,
    identity: str,
    kind: str,
    target: str,
    observe: Observe,
    act: Callable[[], Awaitable[None]],
) -> tuple[str, str, bool]:
    """Run ``act`` once for this invocation and target; returns (state marker, its time, replay).

    ``observe`` reads what the rotation changes, or None when it changes nothing readable."""
    ledger = bao.config.ledger
    path = _ledger_path(ledger, ctx, kind, target)
    deadline = ctx.deadline
    for _ in range(CAS_ROUNDS):
        found = await bao.kv_read(ledger.mount, path, deadline=deadline)
        entry, meta = found if found is not None else ({}, {})
        if entry.get("state") == "done":
            when = str(entry.get("afterTime") or "") or _rfc3339(meta.get("created_time"))
            return str(entry.get("after", "")), when, True
        before = await observe()
        if found is None:
            entry = {
                "state": "started",
                "kind": kind,
                "target": target,
                "event": identity,
                "before": before[0] if before else "",
            }
            try:
                await bao.kv_write(ledger.mount, path, entry, cas=0, deadline=deadline)
            except openbao_client.OpenBaoError as exc:
                if exc.cas_mismatch:
                    continue  # a concurrent attempt created it: read it
                raise
            version = 1
        else:
            version = int(meta.get("version") or 1)
        replay = found is not None and before is not None and entry.get("before") != before[0]
        if not replay:
            await act()
        after = await observe()
        done = {
            **entry,
            "state": "done",
            "after": after[0] if after else "",
            "afterTime": after[1] if after else "",
        }
        try:
            written = await bao.kv_write(ledger.mount, path, done, cas=version, deadline=deadline)
        except openbao_client.OpenBaoError as exc:
            if exc.cas_mismatch:
                continue  # recorded by a concurrent attempt: read it
            raise
        return done["after"], done["afterTime"] or _rfc3339(written.get("created_time")), replay
    raise glue.TemporaryError(f"{kind} {target}: the rotation ledger keeps changing under us")


def _ledger_plan(
    bao: openbao_client.OpenBao | None, ctx: glue.Context, kind: str, target: str, rotate: glue.Call
) -> list[glue.Call]:
    ledger = bao.config.ledger if bao is not None else openbao_client.Ledger()
    path = _ledger_path(ledger, ctx, kind, target)
    return [
        glue.Call("GET", f"/v1/{ledger.mount}/data/{path}", note="look up this invocation in the ledger"),
        glue.Call(
            "POST",
            f"/v1/{ledger.mount}/data/{path}",
            body={"options": {"cas": 0}, "data": {"state": "started", "kind": kind, "target": target}},
            note="record the rotation before making it",
        ),
        rotate,
        glue.Call(
            "POST",
            f"/v1/{ledger.mount}/data/{path}",
            body={"options": {"cas": 1}, "data": {"state": "done"}},
            note="record that it was made",
        ),
    ]


async def _guarded_handler(
    *,
    event: CloudEvent,
    params: Rotation,
    ctx: glue.Context,
    kind: str,
    target: str,
    rotate: glue.Call,
    observe: Callable[[openbao_client.OpenBao], Observe],
    act: Callable[[openbao_client.OpenBao], Callable[[], Awaitable[None]]],
) -> glue.Plan | None:
    bao = await _client(ctx)
    if ctx.dry_run:
        if bao is not None:
            ledger = bao.config.ledger
            path = _ledger_path(ledger, ctx, kind, target)
            found = None
            with contextlib.suppress(openbao_client.OpenBaoError):
                found = await bao.kv_read(ledger.mount, path, deadline=ctx.deadline)
            if found is not None and found[0].get("state") == "done":
                version = _version_label(ctx, kind, target, str(found[0].get("after") or ""))
                when = str(found[0].get("afterTime") or "") or _rfc3339(found[1].get("created_time"))
                restarts = await _follow_ups(ctx, event, params.restart, version, when)
                return glue.Plan(restarts, summary=f"{kind} {target} was already rotated for this event")
        calls = _ledger_plan(bao, ctx, kind, target, rotate)
        calls += [_restart_call(t, f"{target}@<new version>") for t in params.restart]
        return glue.Plan(calls, summary=f"{kind} {target}")
    assert bao is not None
    with _errors(f"{kind} {target}"):
        after, when, replay = await _guarded(bao, ctx, _identity(event), kind, target, observe(bao), act(bao))
    ctx.log.info(
        "secret rotated" if not replay else "secret already rotated by this event",
        kind=kind,
        target=target,
        version=after,
    )
    await _follow_ups(ctx, event, params.restart, _version_label(ctx, kind, target, after), when)
    return None


# --------------------------------------------------------------------------------------------- database


@glue.handler(
    "openbao.database.rotate-role",
    params=DatabaseRoleParams,
    rbac=RBAC,
    clients=[CLIENT, "kubernetes"],
    openbao=DATABASE_ROLE_POLICY,
)
async def database_rotate_role(
    *, event: CloudEvent, params: DatabaseRoleParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Rotate a database static role's password once per event, then restart its consumers."""

    def observe(bao: openbao_client.OpenBao) -> Observe:
        async def read() -> tuple[str, str]:
            role = await bao.database_static_role(params.mount, params.role, deadline=ctx.deadline)
            if role is None:
                raise glue.PermanentError(f"database static role {params.mount}/{params.role} does not exist")
            last = str(role.get("last_vault_rotation") or "")
            return last, _rfc3339(last)

        return read

    def act(bao: openbao_client.OpenBao) -> Callable[[], Awaitable[None]]:
        return lambda: bao.database_rotate_role(params.mount, params.role, deadline=ctx.deadline)

    return await _guarded_handler(
        event=event,
        params=params,
        ctx=ctx,
        kind="database rotate-role",
        target=f"{params.mount}/static-roles/{params.role}",
        rotate=glue.Call("POST", f"/v1/{params.mount}/rotate-role/{params.role}", note="rotate the password"),
        observe=observe,
        act=act,
    )


@glue.handler(
    "openbao.database.rotate-root",
    params=DatabaseRootParams,
    rbac=RBAC,
    clients=[CLIENT, "kubernetes"],
    openbao=DATABASE_ROOT_POLICY,
)
async def database_rotate_root(
    *, event: CloudEvent, params: DatabaseRootParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Rotate a database connection's root credential once per event, then restart its consumers."""

    def observe(bao: openbao_client.OpenBao) -> Observe:
        async def nothing() -> None:
            return None  # rotate-root leaves nothing readable behind

        return nothing

    def act(bao: openbao_client.OpenBao) -> Callable[[], Awaitable[None]]:
        return lambda: bao.database_rotate_root(params.mount, params.connection, deadline=ctx.deadline)

    return await _guarded_handler(
        event=event,
        params=params,
        ctx=ctx,
        kind="database rotate-root",
        target=f"{params.mount}/config/{params.connection}",
        rotate=glue.Call(
            "POST", f"/v1/{params.mount}/rotate-root/{params.connection}", note="rotate the root credential"
        ),
        observe=observe,
        act=act,
    )


# --------------------------------------------------------------------------------------------- transit


@glue.handler(
    "openbao.transit.rotate",
    params=TransitParams,
    rbac=RBAC,
    clients=[CLIENT, "kubernetes"],
    openbao=TRANSIT_POLICY,
)
async def transit_rotate(
    *, event: CloudEvent, params: TransitParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Add a transit key version once per event, then restart its consumers."""

    def observe(bao: openbao_client.OpenBao) -> Observe:
        async def read() -> tuple[str, str]:
            key = await bao.transit_key(params.mount, params.key, deadline=ctx.deadline)
            if key is None:
                raise glue.PermanentError(f"transit key {params.mount}/{params.key} does not exist")
            latest = str(key.get("latest_version") or "")
            created = (key.get("keys") or {}).get(latest)
            if isinstance(created, dict):  # asymmetric keys: {"creation_time": ..., "public_key": ...}
                created = created.get("creation_time")
            return latest, _rfc3339(created)

        return read

    def act(bao: openbao_client.OpenBao) -> Callable[[], Awaitable[None]]:
        async def rotate() -> None:
            await bao.transit_rotate(params.mount, params.key, deadline=ctx.deadline)

        return rotate

    return await _guarded_handler(
        event=event,
        params=params,
        ctx=ctx,
        kind="transit rotate",
        target=f"{params.mount}/keys/{params.key}",
        rotate=glue.Call("POST", f"/v1/{params.mount}/keys/{params.key}/rotate", note="add a key version"),
        observe=observe,
        act=act,
    )
