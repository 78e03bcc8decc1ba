"""A small async OpenBao client on aiohttp: authentication, token upkeep, retries, and the few engine calls
the rotation handlers make.

Follows the OpenBao HTTP API (``website/content/docs/api/index.mdx``, ``api/auth/{kubernetes,approle,token}``,
``api/secret/kv/kv-v2``, ``api/secret/databases``, ``api/secret/transit``):

- every request carries ``X-Vault-Request: true``, the token as ``X-Vault-Token`` and, when configured,
  ``X-Vault-Namespace``;
- errors are ``{"errors": [...]}``; 412, 429 and 503 (sealed, quota) are retried with capped, jittered
  exponential backoff, and so are 500/502 and dropped connections for calls that are safe to repeat; a
  standby forwards to the active node, answers 307 to it when forwarding fails (aiohttp follows, keeping
  method and body) and 500 ``local node not active but active cluster node not found`` when it knows no
  active node: nothing was forwarded, so that 500 is retried for every call (``internal/http/handler.go``,
  ``forwardRequest``);
- a 403 is either a token that is no longer valid or a policy that does not grant the capability: the
  client looks the token up (``lookup-self``), logs in again and repeats the call only when the token is no
  longer valid, and otherwise raises :class:`PermissionDenied` naming the path and the capability;
- tokens are renewed at two thirds of their lease; a renewal that cannot extend the lease, or is refused,
  is replaced by a fresh login; a token the client logged in for is revoked when the client replaces it
  and when it closes;
- an AppRole secret id can come response-wrapped (``docs/auth/approle.mdx``, trusted orchestrator): the
  wrapping token is read from a file, its creation path checked (``sys/wrapping/lookup``) and unwrapped
  once (``sys/wrapping/unwrap``); the secret id is kept in memory for later logins until the file holds a
  new wrapping token.

Secrets (the token, the service-account JWT, the AppRole secret id, values written) never appear in an
exception or a log line: errors carry the method, the path, the status and OpenBao's own messages, with
any value the caller marked sensitive masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import random
import re
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import quote

import aiohttp
import orjson
import pydantic
from pydantic.alias_generators import to_camel

import glue

__all__ = [
    "AppRoleAuth",
    "Config",
    "KubernetesAuth",
    "Ledger",
    "LoginFailed",
    "OpenBao",
    "OpenBaoError",
    "PermissionDenied",
    "Retry",
    "TokenAuth",
    "Unavailable",
]

#: Where Kubernetes mounts the pod's service-account token.
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

#: Answers that mean "not done, try again": eventual consistency, quota, sealed / standby / locked.
RETRY_ALWAYS = frozenset({412, 429, 503})
#: Answers after which the request may or may not have taken effect: retried only when that is harmless.
RETRY_IF_SAFE = frozenset({500, 502, 504})
#: A standby's 500 when it knows no active node to forward to: nothing was done (internal/http/handler.go).
STANDBY_WITHOUT_ACTIVE = "local node not active but active cluster node not found"


#: A mount or a path: slash-separated segments of letters, digits, "_", "." and "-".
_MOUNT_PATH = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _SecretSource(_Model):
    """A secret named by a file path or an environment variable, read when needed, never stored here."""

    @staticmethod
    def _read(what: str, file: Path | None, env: str | None) -> str:
        if file is not None:
            try:
                value = file.read_text().strip()
            except OSError as exc:
                raise OpenBaoError(f"cannot read the {what} file {file}: {exc.strerror}") from None
        elif env is not None:
            value = os.environ.get(env, "").strip()
            if not value:
                raise OpenBaoError(f"environment variable {env} (the {what}) is not set")
        else:  # pragma: no cover - prevented by validation
            raise OpenBaoError(f"no source for the {what}")
        if not value:
            raise OpenBaoError(f"the {what} is empty")
        return value


class TokenAuth(_SecretSource):
    """A token provisioned from outside (an agent writing a file, an environment variable)."""

    method: Literal["token"] = "token"
    token_file: Path | None = None
    token_env: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> TokenAuth:
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError("give exactly one of tokenFile or tokenEnv")
        return self

    def token(self) -> str:
        return self._read("token", self.token_file, self.token_env)


class KubernetesAuth(_SecretSource):
    """Log in with the pod's service-account token (re-read at every login: it is rotated)."""

    method: Literal["kubernetes"] = "kubernetes"
    role: str = pydantic.Field(min_length=1)
    mount_path: str = pydantic.Field(default="kubernetes", pattern=_MOUNT_PATH)
    token_file: Path = SERVICE_ACCOUNT_TOKEN

    def login_body(self) -> dict[str, str]:
        return {"role": self.role, "jwt": self._read("service-account token", self.token_file, None)}


class AppRoleAuth(_SecretSource):
    """Log in with an AppRole role id and a secret id from a file, an environment variable, or a
    response-wrapped secret id: a file holding the wrapping token a trusted orchestrator delivered."""

    method: Literal["approle"] = "approle"
    role_id: str = pydantic.Field(min_length=1)
    mount_path: str = pydantic.Field(default="approle", pattern=_MOUNT_PATH)
    secret_id_file: Path | None = None
    secret_id_env: str | None = None
    secret_id_wrapping_token_file: Path | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> AppRoleAuth:
        given = (self.secret_id_file, self.secret_id_env, self.secret_id_wrapping_token_file)
        if sum(source is not None for source in given) != 1:
            raise ValueError("give exactly one of secretIdFile, secretIdEnv or secretIdWrappingTokenFile")
        return self

    def wrapping_token(self) -> str:
        return self._read("secret id wrapping token", self.secret_id_wrapping_token_file, None)

    def login_body(self, secret_id: str | None = None) -> dict[str, str]:
        """The login request; ``secret_id`` is the unwrapped one when the secret id comes wrapped."""
        if secret_id is None:
            secret_id = self._read("secret id", self.secret_id_file, self.secret_id_env)
        return {"role_id": self.role_id, "secret_id": secret_id}


class Retry(_Model):
    """Backoff for answers that mean "not now" (sealed, standby, quota)."""

    initial: float = pydantic.Field(default=0.25, gt=0, description="First delay, seconds.")
    maximum: float = pydantic.Field(default=5.0, gt=0, description="Cap on one delay, seconds.")
    attempts: int = pydantic.Field(default=8, ge=1, description="Tries per call, the first one included.")

    def policy(self) -> glue.RetryPolicy:
        """The delays between tries: doubling from ``initial``, each between half and all of its step,
        never over ``maximum``."""
        return glue.RetryPolicy.equal_jitter(self.initial, self.maximum)


class Ledger(_Model):
    """A KV v2 location where rotations that cannot carry their own marker record what they did."""

    mount: str = pydantic.Field(default="secret", pattern=_MOUNT_PATH)
    prefix: str = pydantic.Field(default="runtime-glue/rotations", pattern=_MOUNT_PATH)


class Config(_Model):
    """Settings under ``clients.openbao``. Credentials are named by file path or environment variable."""

    address: pydantic.AnyHttpUrl = pydantic.Field(description="e.g. https://openbao.openbao.svc:8200")
    namespace: str | None = pydantic.Field(default=None, description="Sent as X-Vault-Namespace.")
    ca_file: Path | None = pydantic.Field(
        default=None, description="PEM bundle that signs the server's certificate."
    )
    auth: Annotated[TokenAuth | KubernetesAuth | AppRoleAuth, pydantic.Field(discriminator="method")]
    request_timeout: float = pydantic.Field(
        default=10.0, gt=0, description="Cap on one HTTP exchange, seconds."
    )
    retry: Retry = Retry()
    ledger: Ledger = Ledger()


class OpenBaoError(Exception):
    """A call failed: ``status`` is the HTTP status (None without answer), ``errors`` OpenBao's messages."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: Iterable[str] = (),
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = tuple(errors)
        self.method = method
        self.path = path

    @property
    def cas_mismatch(self) -> bool:
        """KV v2 refused a write because ``cas`` was not the current version."""
        return self.status == 400 and any("check-and-set parameter did not match" in e for e in self.errors)

    @property
    def metadata_cas_mismatch(self) -> bool:
        """KV v2 refused a metadata write because ``metadata_cas`` was not the current metadata version
        (OpenBao 2.4 and later: internal/builtin/logical/kv/path_metadata.go, pathMetadataWrite)."""
        return self.status == 400 and any(
            "metadata check-and-set parameter does not match" in e
            or "metadata_cas must be 0 when creating new metadata" in e
            for e in self.errors
        )


class LoginFailed(OpenBaoError):
    """OpenBao refused the login (wrong role, credentials, mount or namespace)."""


class PermissionDenied(OpenBaoError):
    """A valid token was refused (403): its policies do not grant ``capability`` on ``path``."""

    def __init__(self, message: str, *, capability: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.capability = capability


class Unavailable(OpenBaoError):
    """OpenBao could not be reached, or kept answering "not now", within the attempts or the deadline.

    ``ambiguous`` is True when a request that is not safe to repeat may have taken effect."""

    def __init__(self, message: str, *, ambiguous: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.ambiguous = ambiguous


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _segment(value: str) -> str:
    return quote(value.strip("/"), safe="/@:-_.~")


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """One call as the caller asked for it: what to send and how to treat its failures."""

    method: str
    path: str
    body: Mapping[str, Any] | None
    params: Mapping[str, str] | None
    headers: dict[str, str]
    deadline: float | None  # loop.time() after which no new attempt starts
    safe: bool  # repeating it is harmless: ambiguous failures are retried
    secrets: tuple[str, ...]  # masked in any error message

    @property
    def where(self) -> str:
        return f"{self.method} /v1/{self.path.lstrip('/')}"


class _Answer(NamedTuple):
    """What one HTTP exchange brought back."""

    status: int
    body: bytes
    retry_after: str | None


class _NotNow(Exception):
    """An attempt failed in a way that may pass: the call is tried again after a pause."""

    def __init__(self, failure: Unavailable, retry_after: float | None = None) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.retry_after = retry_after


class _Transport:
    """The connection pool and the requests: one call is sent, and sent again while OpenBao answers
    "not now", with the capped, jittered backoff of ``retry`` and within the call's deadline."""

    def __init__(self, config: Config, session: aiohttp.ClientSession | None) -> None:
        self.config = config
        self.base = str(config.address).rstrip("/")
        self.session = session
        self._own_session = session is None
        self._backoff = config.retry.policy()
        self._rng = random.Random()

    def open(self) -> None:
        if self.session is not None:
            return
        ssl_context: ssl.SSLContext | bool = True
        if self.config.ca_file is not None:
            try:
                ssl_context = ssl.create_default_context(cafile=str(self.config.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise OpenBaoError(f"cannot load the CA bundle {self.config.ca_file}: {exc}") from None
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context), json_serialize=_json_dumps
        )

    async def close(self) -> None:
        if self.session is not None and self._own_session:
            await self.session.close()
        self.session = None

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"X-Vault-Request": "true"}
        if token is not None:
            headers["X-Vault-Token"] = token
        if self.config.namespace:
            headers["X-Vault-Namespace"] = self.config.namespace
        return headers

    async def post_quietly(self, path: str, token: str) -> None:
        """POST once with a short timeout, ignoring any failure (a courtesy such as revoking a token)."""
        if self.session is None:
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with self.session.post(
                f"{self.base}/v1/{path}",
                headers=self.headers(token),
                timeout=aiohttp.ClientTimeout(total=min(2.0, self.config.request_timeout)),
            ):
                pass

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
        deadline: float | None = None,
        safe: bool = True,
        secrets: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """Call ``/v1/<path>`` until it succeeds, fails for good, or runs out of attempts or time."""
        if self.session is None:
            raise OpenBaoError("the OpenBao client is not open")
        if token is not None:
            secrets = (*secrets, token)
        call = _Call(method, path, body, params, self.headers(token), deadline, safe, secrets)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(call)
            except _NotNow as not_now:
                await self._pause(call, attempt, not_now)

    async def _attempt(self, call: _Call) -> dict[str, Any] | None:
        """One exchange: the decoded answer, or an error (:class:`_NotNow` when worth another try)."""
        try:
            answer = await self._exchange(call, self._time_left(call))
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            # The server's certificate is not trusted (caFile?): retrying cannot help.
            raise self._error(call, f"TLS failed: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            # Not connected: nothing was sent, always safe to try again.
            raise _NotNow(self._unavailable(call, f"cannot connect: {exc.os_error}")) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            failure = self._unavailable(call, f"no answer ({reason})", ambiguous=not call.safe)
            if not call.safe:
                raise failure from None
            raise _NotNow(failure) from None
        if answer.status < 400:
            return _decode(answer.body, call.where)
        raise self._refusal(call, answer)

    def _time_left(self, call: _Call) -> float:
        """The timeout of the next exchange: the request timeout, cut short by the call's deadline."""
        timeout = self.config.request_timeout
        if call.deadline is not None:
            timeout = min(timeout, call.deadline - asyncio.get_running_loop().time())
            if timeout <= 0:
                raise self._unavailable(call, "no time left before the deadline")
        return timeout

    async def _exchange(self, call: _Call, seconds: float) -> _Answer:
        assert self.session is not None  # checked by send()
        async with self.session.request(
            call.method,
            f"{self.base}/v1/{call.path.lstrip('/')}",
            json=call.body,
            params=call.params,
            headers=call.headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            return _Answer(response.status, await response.read(), response.headers.get("Retry-After"))

    def _refusal(self, call: _Call, answer: _Answer) -> OpenBaoError | _NotNow:
        """The error an answer of 400 or more stands for."""
        errors = [_mask(str(e), call.secrets) for e in _errors(answer.body)]
        message = f"OpenBao {call.where}: {answer.status} {'; '.join(errors) or 'no error message'}"
        fields: dict[str, Any] = {
            "status": answer.status,
            "errors": errors,
            "method": call.method,
            "path": call.path,
        }
        if (
            answer.status in RETRY_ALWAYS
            or (call.safe and answer.status in RETRY_IF_SAFE)
            or (answer.status == 500 and STANDBY_WITHOUT_ACTIVE in errors)
        ):
            return _NotNow(Unavailable(message, **fields), glue.retry_after(answer.retry_after))
        return OpenBaoError(message, **fields)

    async def _pause(self, call: _Call, attempt: int, not_now: _NotNow) -> None:
        """Wait before the next attempt; raise the failure when no attempt or time is left for it."""
        if attempt >= self.config.retry.attempts:
            raise not_now.failure from None
        delay = self._backoff.delay(attempt, self._rng)
        if not_now.retry_after is not None:
            delay = max(delay, min(not_now.retry_after, self.config.retry.maximum))
        if call.deadline is not None and asyncio.get_running_loop().time() + delay >= call.deadline:
            raise not_now.failure from None
        await asyncio.sleep(delay)

    @staticmethod
    def _error(call: _Call, what: str) -> OpenBaoError:
        return OpenBaoError(f"OpenBao {call.where}: {what}", method=call.method, path=call.path)

    @staticmethod
    def _unavailable(call: _Call, what: str, *, ambiguous: bool = False) -> Unavailable:
        return Unavailable(
            f"OpenBao {call.where}: {what}", method=call.method, path=call.path, ambiguous=ambiguous
        )


@dataclasses.dataclass(slots=True)
class _Token:
    value: str
    lease: float  # seconds granted by the last login or renewal; 0: does not expire
    renewable: bool
    renew_at: float | None  # loop.time()
    expires_at: float | None


class _Tokens:
    """The client's one token: logs in, renews at two thirds of the lease, logs in again when a renewal
    cannot extend it or the token was refused, and revokes a token it logged in for at the end."""

    def __init__(self, config: Config, transport: _Transport) -> None:
        self.config = config
        self._transport = transport
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._unwrapped: tuple[str, str] | None = None  # (digest of the wrapping token, its secret id)
        self.logins = 0

    async def current(self, deadline: float | None, stale: str | None = None) -> str:
        """A token to send, ``stale`` (one that is no longer valid) replaced by a fresh login."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            current = self._token
            replaced: _Token | None = None
            if current is not None and stale is not None and current.value == stale:
                replaced, current = current, None
            if current is not None and current.expires_at is not None and now >= current.expires_at:
                current = self._token = None
            if current is not None and current.renew_at is not None and now >= current.renew_at:
                renewed = await self._renew(current, deadline)
                if renewed is None:
                    replaced = current
                current = renewed
            if current is None:
                self._token = None
                current = await self._login(deadline)
            self._token = current
            if replaced is not None and not isinstance(self.config.auth, TokenAuth):
                # Still valid until its TTL otherwise (a renewal capped by the max TTL): revoke it.
                await self._transport.post_quietly("auth/token/revoke-self", replaced.value)
            return current.value

    async def policies(self, value: str, deadline: float | None) -> tuple[str, ...] | None:
        """The policies of a token that is still valid; None when OpenBao no longer accepts it."""
        try:
            answer = await self._transport.send(
                "GET", "auth/token/lookup-self", token=value, deadline=deadline
            )
        except Unavailable:
            raise
        except OpenBaoError:
            return None  # 403: expired, revoked, or a lookup its policies do not allow either
        data = (answer or {}).get("data") or {}
        return tuple(str(p) for p in data.get("policies") or ())

    async def revoke(self) -> None:
        """Revoke the token this client logged in for (it would live until its TTL); keep none."""
        token, self._token = self._token, None
        if token is not None and not isinstance(self.config.auth, TokenAuth):
            await self._transport.post_quietly("auth/token/revoke-self", token.value)

    def _lease(self, value: str, auth: Mapping[str, Any]) -> _Token:
        now = asyncio.get_running_loop().time()
        lease = float(auth.get("lease_duration") or auth.get("ttl") or 0)
        renewable = bool(auth.get("renewable"))
        if lease <= 0:  # a token that does not expire (root, or a periodic token looked up with ttl 0)
            return _Token(value, 0, renewable, None, None)
        return _Token(value, lease, renewable, now + lease * 2 / 3 if renewable else None, now + lease)

    async def _login(self, deadline: float | None) -> _Token:
        auth = self.config.auth
        if isinstance(auth, TokenAuth):
            return await self._look_up(auth.token(), deadline)
        wrapped = isinstance(auth, AppRoleAuth) and auth.secret_id_wrapping_token_file is not None
        if isinstance(auth, AppRoleAuth) and wrapped:
            body = auth.login_body(await self._unwrap_secret_id(auth, deadline))
        else:
            body = auth.login_body()
        secrets = tuple(v for k, v in body.items() if k != "role" and k != "role_id")
        self.logins += 1
        try:
            answer = await self._transport.send(
                "POST", f"auth/{auth.mount_path}/login", body=body, deadline=deadline, secrets=secrets
            )
        except OpenBaoError as exc:
            if isinstance(exc, Unavailable):
                raise
            hint = ""
            if isinstance(auth, AppRoleAuth) and wrapped:
                hint = (
                    f" (the secret id unwrapped from {auth.secret_id_wrapping_token_file} may have expired"
                    " or run out of uses: deliver a new wrapping token)"
                )
            raise LoginFailed(
                f"OpenBao login ({auth.method}, mount {auth.mount_path}) refused: {exc}{hint}",
                status=exc.status,
                errors=exc.errors,
                method=exc.method,
                path=exc.path,
            ) from None
        grant = (answer or {}).get("auth") or {}
        token = grant.get("client_token")
        if not isinstance(token, str) or not token:
            raise LoginFailed(f"OpenBao login ({auth.method}) answered without a client token")
        return self._lease(token, grant)

    async def _unwrap_secret_id(self, auth: AppRoleAuth, deadline: float | None) -> str:
        """The secret id inside the wrapping token of ``secretIdWrappingTokenFile``, unwrapped once.

        Follows docs/concepts/response-wrapping.mdx: the token's creation path is checked with
        ``sys/wrapping/lookup`` (which does not use it up) before ``sys/wrapping/unwrap``, called with the
        wrapping token as the client token and no body (api/system/wrapping-unwrap.mdx)."""
        wrapping = auth.wrapping_token()
        digest = hashlib.sha256(wrapping.encode()).hexdigest()
        if self._unwrapped is not None and self._unwrapped[0] == digest:
            return self._unwrapped[1]
        where = f"the secret id wrapping token in {auth.secret_id_wrapping_token_file}"
        try:
            info = await self._transport.send(
                "POST",
                "sys/wrapping/lookup",
                body={"token": wrapping},
                deadline=deadline,
                secrets=(wrapping,),
            )
            creation = str(((info or {}).get("data") or {}).get("creation_path") or "")
            expected = rf"auth/{re.escape(auth.mount_path)}/role/[^/]+/secret-id"
            if not re.fullmatch(expected, creation):
                raise LoginFailed(
                    f"{where} was not created by auth/{auth.mount_path}/role/<role>/secret-id but by"
                    f" {creation or 'an unknown path'}: not unwrapped"
                )
            answer = await self._transport.send(
                "POST", "sys/wrapping/unwrap", token=wrapping, deadline=deadline, safe=False
            )
        except (Unavailable, LoginFailed):
            raise
        except OpenBaoError as exc:
            hint = ""
            if any("wrapping token is not valid" in e for e in exc.errors):
                hint = (
                    ": it expired or was already unwrapped; a wrapping token unwraps once, so if this"
                    " client did not unwrap it, it may have been intercepted; deliver a new one"
                )
            raise LoginFailed(
                f"OpenBao refused {where}: {exc}{hint}", status=exc.status, errors=exc.errors
            ) from None
        secret_id = ((answer or {}).get("data") or {}).get("secret_id")
        if not isinstance(secret_id, str) or not secret_id:
            raise LoginFailed(f"{where} did not hold a secret_id")
        self._unwrapped = (digest, secret_id)
        return secret_id

    async def _look_up(self, value: str, deadline: float | None) -> _Token:
        """A provisioned token, checked and its lease read with ``lookup-self``."""
        self.logins += 1
        try:
            answer = await self._transport.send(
                "GET", "auth/token/lookup-self", token=value, deadline=deadline
            )
        except OpenBaoError as exc:
            if isinstance(exc, Unavailable):
                raise
            raise LoginFailed(
                f"OpenBao refused the configured token: {exc}", status=exc.status, errors=exc.errors
            ) from None
        data = (answer or {}).get("data") or {}
        return self._lease(value, {"ttl": data.get("ttl"), "renewable": data.get("renewable")})

    async def _renew(self, current: _Token, deadline: float | None) -> _Token | None:
        """Extend the lease; None when a fresh login is needed instead."""
        try:
            answer = await self._transport.send(
                "POST", "auth/token/renew-self", body={}, token=current.value, deadline=deadline
            )
        except Unavailable:
            raise
        except OpenBaoError:
            return None  # refused (403: revoked or expired): log in again
        grant = (answer or {}).get("auth") or {}
        renewed = self._lease(current.value, grant)
        if renewed.lease < current.lease:
            # Capped by the token's max TTL: the lease no longer grows. Log in while the old one still works.
            return None
        return renewed


class OpenBao:
    """One connection pool and one token, shared by every invocation; safe for concurrent use."""

    def __init__(self, config: Config, *, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self._transport = _Transport(config, session)
        self._tokens = _Tokens(config, self._transport)

    async def __aenter__(self) -> OpenBao:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        self._transport.open()

    async def aclose(self) -> None:
        """Revoke the token this client logged in for (it would live until its TTL), then close."""
        await self._tokens.revoke()
        await self._transport.close()

    @property
    def logins(self) -> int:
        """How many times this client has logged in (tokens leak until their TTL, so fewer is better)."""
        return self._tokens.logins

    # -- the generic call -------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        deadline: float | None = None,
        safe: bool = True,
        sensitive: Iterable[str] = (),
        authenticated: bool = True,
        capability: str | None = None,
    ) -> dict[str, Any] | None:
        """Call ``/v1/<path>``; return the decoded body (None for 204 or an empty body).

        ``safe`` says whether repeating the request is harmless (reads, check-and-set writes): only then
        are ambiguous failures (500/502, a dropped connection) retried. ``deadline`` is a ``loop.time()``
        after which no new attempt starts. ``sensitive`` values are masked in any error raised.
        ``capability`` is the ACL capability the call needs, named in :class:`PermissionDenied` (by default
        from the method; POST: "create or update", as OpenBao decides by whether the path exists).
        """
        send = functools.partial(
            self._transport.send,
            method,
            path,
            body=json,
            params=params,
            deadline=deadline,
            safe=safe,
            secrets=tuple(sensitive),
        )
        if not authenticated:
            return await send()
        needs = capability or _CAPABILITIES.get(method.upper(), method.lower())
        token = await self._tokens.current(deadline)
        try:
            return await send(token=token)
        except OpenBaoError as exc:
            if exc.status != 403 or isinstance(exc, Unavailable):
                raise
            refused = exc
        policies = await self._tokens.policies(token, deadline)
        if policies is not None:
            raise _denied(refused, needs, f"the token is valid (policies: {', '.join(policies) or 'none'})")
        # Expired or revoked: one fresh login, one more try.
        token = await self._tokens.current(deadline, stale=token)
        try:
            return await send(token=token)
        except OpenBaoError as exc:
            if exc.status != 403 or isinstance(exc, Unavailable):
                raise
            raise _denied(exc, needs, "the token is valid (just issued)") from None

    # -- health -----------------------------------------------------------------------------------------

    async def health(self, deadline: float | None = None) -> dict[str, Any]:
        """``/v1/sys/health`` with standby and sealed answered as 200 so the body can be read."""
        answer = await self.request(
            "GET",
            "sys/health",
            params={"standbyok": "true", "sealedcode": "200", "uninitcode": "200"},
            deadline=deadline,
            authenticated=False,
        )
        return answer or {}

    async def _read_data(
        self, path: str, *, params: Mapping[str, str] | None = None, deadline: float | None = None
    ) -> dict[str, Any] | None:
        """GET ``path``: the answer's ``data``, or None when the path does not exist."""
        try:
            answer = await self.request("GET", path, params=params, deadline=deadline)
        except OpenBaoError as exc:
            if _absent(exc):
                return None
            raise
        return dict((answer or {}).get("data") or {})

    # -- KV version 2 -----------------------------------------------------------------------------------

    async def kv_metadata(
        self, mount: str, path: str, *, deadline: float | None = None
    ) -> dict[str, Any] | None:
        """The secret's metadata (``current_version``, ``custom_metadata``...); None if it does not exist."""
        return await self._read_data(f"{_segment(mount)}/metadata/{_segment(path)}", deadline=deadline)

    async def kv_read(
        self, mount: str, path: str, *, version: int | None = None, deadline: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(data, metadata)`` of a version (the latest by default); None if absent or deleted."""
        params = {"version": str(version)} if version is not None else None
        body = await self._read_data(
            f"{_segment(mount)}/data/{_segment(path)}", params=params, deadline=deadline
        )
        if body is None or body.get("data") is None:
            return None
        return dict(body["data"]), dict(body.get("metadata") or {})

    async def kv_write(
        self,
        mount: str,
        path: str,
        data: Mapping[str, Any],
        *,
        cas: int,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Write a new version if the current one is ``cas`` (0: only if absent). Returns its metadata."""
        sensitive = [str(v) for v in data.values() if isinstance(v, str | int | float)]
        answer = await self.request(
            "POST",
            f"{_segment(mount)}/data/{_segment(path)}",
            json={"options": {"cas": cas}, "data": dict(data)},
            deadline=deadline,
            safe=True,  # check-and-set makes a repeated write fail instead of writing twice
            sensitive=sensitive,
        )
        return dict((answer or {}).get("data") or {})

    async def kv_write_metadata(
        self,
        mount: str,
        path: str,
        *,
        custom_metadata: Mapping[str, str],
        metadata_cas: int,
        deadline: float | None = None,
    ) -> None:
        """Replace the custom metadata if the metadata version is still ``metadata_cas`` (0: none yet, or
        never written by a metadata write). OpenBao before 2.4 ignores ``metadata_cas`` with a warning."""
        await self.request(
            "POST",
            f"{_segment(mount)}/metadata/{_segment(path)}",
            json={"custom_metadata": dict(custom_metadata), "metadata_cas": metadata_cas},
            deadline=deadline,
        )

    # -- transit ----------------------------------------------------------------------------------------

    async def transit_key(
        self, mount: str, name: str, *, deadline: float | None = None
    ) -> dict[str, Any] | None:
        return await self._read_data(f"{_segment(mount)}/keys/{_segment(name)}", deadline=deadline)

    async def transit_rotate(self, mount: str, name: str, *, deadline: float | None = None) -> dict[str, Any]:
        answer = await self.request(
            "POST",
            f"{_segment(mount)}/keys/{_segment(name)}/rotate",
            json={},
            deadline=deadline,
            safe=False,
            capability="update",
        )
        return dict((answer or {}).get("data") or {})

    # -- database ---------------------------------------------------------------------------------------

    async def database_static_role(
        self, mount: str, name: str, *, deadline: float | None = None
    ) -> dict[str, Any] | None:
        """The static role's definition (``username``, ``last_vault_rotation``, ...), never its password."""
        return await self._read_data(f"{_segment(mount)}/static-roles/{_segment(name)}", deadline=deadline)

    async def database_rotate_role(self, mount: str, name: str, *, deadline: float | None = None) -> None:
        await self.request(
            "POST",
            f"{_segment(mount)}/rotate-role/{_segment(name)}",
            deadline=deadline,
            safe=False,
            capability="update",
        )

    async def database_rotate_root(
        self, mount: str, connection: str, *, deadline: float | None = None
    ) -> None:
        await self.request(
            "POST",
            f"{_segment(mount)}/rotate-root/{_segment(connection)}",
            deadline=deadline,
            safe=False,
            capability="update",
        )


#: The ACL capability a request needs, by method (docs/concepts/policies.mdx).
_CAPABILITIES = {
    "GET": "read",
    "LIST": "list",
    "DELETE": "delete",
    "PATCH": "patch",
    "POST": "create or update",
    "PUT": "create or update",
}


def _denied(refused: OpenBaoError, capability: str, token: str) -> PermissionDenied:
    """A policy denial: what was asked, what it needs, and that the token itself is fine."""
    return PermissionDenied(
        f"{refused}: {token} but its policies do not grant the {capability} capability on"
        f" {refused.path.lstrip('/')}",
        capability=capability,
        status=refused.status,
        errors=refused.errors,
        method=refused.method,
        path=refused.path,
    )


def _absent(exc: OpenBaoError) -> bool:
    """A 404 for the path asked (not for the login that preceded it)."""
    return exc.status == 404 and not isinstance(exc, LoginFailed)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _decode(raw: bytes, where: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpenBaoError(f"OpenBao {where}: the answer is not JSON") from None
    if not isinstance(value, dict):
        raise OpenBaoError(f"OpenBao {where}: the answer is not a JSON object")
    return value


def _errors(raw: bytes) -> list[str]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if isinstance(value, dict) and isinstance(value.get("errors"), list):
        return [str(e) for e in value["errors"]]
    return []
