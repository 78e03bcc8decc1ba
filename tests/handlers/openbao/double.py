"""An in-memory HTTP double of the OpenBao API, served by aiohttp on loopback.

It follows the OpenBao documentation and code (openbao/openbao at df6ce2ce, release 2.4.0 and later):
``website/content/docs/api/index.mdx`` (``/v1`` prefix, ``X-Vault-Token``,
``X-Vault-Namespace``, error bodies ``{"errors": [...]}``, status codes), ``api/system/health.mdx``,
``api/auth/kubernetes.mdx``, ``api/auth/approle.mdx``, ``api/auth/token.mdx`` (lookup-self, renew-self),
``api/system/wrapping-unwrap.mdx`` / ``wrapping-lookup.mdx`` with ``internal/vault/request_handling.go``
(a wrapping token unwraps once; then 400 ``wrapping token is not valid or does not exist``),
``api/secret/kv/kv-v2.mdx`` with ``internal/builtin/logical/kv/path_data.go`` / ``path_metadata.go`` /
``path_config.go`` (check-and-set, custom metadata, and since 2.4.0 ``metadata_cas`` against
``current_metadata_version`` and ``metadata_cas_required`` per key or per mount),
``api/secret/databases/index.mdx`` with ``internal/builtin/logical/database/path_rotate_credentials.go`` /
``path_roles.go`` (rotate-root and rotate-role: 204; static role read: ``last_vault_rotation``) and
``api/secret/transit.mdx`` with ``internal/builtin/logical/transit/path_keys.go`` (``formatKeyPolicy``:
a symmetric key's versions read back as unix seconds, an asymmetric key's as objects with ``name``,
``public_key`` and an RFC 3339 ``creation_time``).

Behaviour that matters to a client: a sealed server answers 503 ``Vault is sealed``; a standby forwards to
the active node, falls back to a 307 redirect when forwarding fails, and answers 500 ``local node not active
but active cluster node not found`` when it knows no active node (``internal/http/handler.go``
``forwardRequest``; 503 ``no active Vault instance found`` only when the client asked for no forwarding);
a bad or expired token, and a token whose policies do not grant the capability, get 403 ``permission
denied``; a KV write whose ``cas`` is not the current version gets 400 ``check-and-set parameter did not
match the current version``. Faults (quota 429, 5xx, a lost answer after the request took effect) are
scripted per path with :meth:`OpenBaoDouble.fail`.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass
class Token:
    value: str
    policies: list[str]
    ttl: float  # seconds granted per login or renewal; 0: never expires
    max_ttl: float | None
    issued: float
    expires: float | None
    renewable: bool = True


@dataclasses.dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    errors: list[str]
    times: int
    after: bool  # the request takes effect, then this status is answered (a lost answer)
    headers: dict[str, str]


@dataclasses.dataclass
class KvSecret:
    versions: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    current_version: int = 0
    custom_metadata: dict[str, str] | None = None
    cas_required: bool = False
    metadata_cas_required: bool = False
    current_metadata_version: int = 0  # 0 when created by a data write; each metadata write adds one
    max_versions: int = 0
    created_time: str = dataclasses.field(default_factory=_now_rfc3339)
    updated_time: str = dataclasses.field(default_factory=_now_rfc3339)


#: Transit key types whose versions read back as objects (path_keys.go, formatKeyPolicy).
ASYMMETRIC = frozenset(
    {"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"}
)


@dataclasses.dataclass
class TransitKey:
    versions: dict[int, int]  # version -> creation time (unix seconds)
    type: str = "aes256-gcm96"

    @property
    def latest_version(self) -> int:
        return max(self.versions)


@dataclasses.dataclass
class StaticRole:
    db_name: str
    username: str
    rotation_period: int = 86400
    last_vault_rotation: str = dataclasses.field(default_factory=_now_rfc3339)
    rotations: int = 0


@dataclasses.dataclass
class Connection:
    root_rotations: int = 0


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    path: str
    namespace: str | None
    status: int


class _KvV2:
    """The KV version 2 engine: data and metadata with check-and-set, custom metadata, mount config."""

    kv: dict[str, dict[str, KvSecret]]
    kv_cas_required: dict[str, bool]
    kv_metadata_cas_required: dict[str, bool]

    # -- set-up helpers used by tests --------------------------------------------------------------------

    def kv_put(self, mount: str, path: str, data: dict[str, Any]) -> int:
        """Write a version as another client would; returns the new version."""
        secret = self.kv[mount].setdefault(path, KvSecret())
        secret.current_version += 1
        secret.versions[secret.current_version] = {"data": dict(data), "created_time": _now_rfc3339()}
        secret.updated_time = _now_rfc3339()
        return secret.current_version

    def kv_put_metadata(self, mount: str, path: str, custom_metadata: dict[str, str]) -> None:
        """Replace the custom metadata as another client would (a metadata write: its version goes up)."""
        secret = self.kv[mount].setdefault(path, KvSecret())
        secret.custom_metadata = dict(custom_metadata)
        secret.current_metadata_version += 1
        secret.updated_time = _now_rfc3339()

    def kv_data(self, mount: str, path: str, version: int | None = None) -> dict[str, Any]:
        secret = self.kv[mount][path]
        return dict(secret.versions[version or secret.current_version]["data"])

    def written_values(self, *, skip: str = "runtime-glue/") -> list[str]:
        """Every value of every KV version, except under ``skip`` (the rotation ledger holds no secret)."""
        return [
            str(value)
            for secrets_ in self.kv.values()
            for path, secret in secrets_.items()
            if not path.startswith(skip)
            for version in secret.versions.values()
            for value in version["data"].values()
        ]

    # -- KV version 2 ------------------------------------------------------------------------------------

    def _kv(
        self, request: web.Request, method: str, mount: str, rest: str, body: dict[str, Any]
    ) -> web.Response:
        kind, _, key = rest.partition("/")
        secrets_ = self.kv[mount]
        if kind == "config" and not key:
            return self._kv_config(method, mount, body)
        if not key:
            return _error(404, "no handler for route")
        if kind == "data" and method == "GET":
            secret = secrets_.get(key)
            version = int(request.query.get("version", 0) or 0)
            if secret is None or secret.current_version == 0:
                return _error(404)
            version = version or secret.current_version
            if version not in secret.versions:
                return _error(404)
            entry = secret.versions[version]
            return web.json_response(
                {"data": {"data": entry["data"], "metadata": self._version_meta(secret, version)}}
            )
        if kind == "data" and method == "POST":
            data = body.get("data")
            if not isinstance(data, dict):
                return _error(400, "no data provided")
            options = body.get("options") or {}
            secret = secrets_.get(key)
            current = secret.current_version if secret is not None else 0
            required = self.kv_cas_required[mount] or (secret is not None and secret.cas_required)
            if "cas" not in options:
                if required:
                    return _error(400, "check-and-set parameter required for this call")
            else:
                try:
                    cas = int(options["cas"])
                except (TypeError, ValueError):
                    return _error(400, "error parsing check-and-set parameter")
                if cas != current:
                    return _error(400, "check-and-set parameter did not match the current version")
            version = self.kv_put(mount, key, data)
            secret = secrets_[key]
            return web.json_response({"data": self._version_meta(secret, version)})
        if kind == "metadata" and method == "GET":
            secret = secrets_.get(key)
            if secret is None:
                return _error(404)
            return web.json_response(
                {
                    "data": {
                        "current_version": secret.current_version,
                        "current_metadata_version": secret.current_metadata_version,
                        "oldest_version": min(secret.versions, default=0),
                        "max_versions": secret.max_versions,
                        "cas_required": secret.cas_required,
                        "metadata_cas_required": secret.metadata_cas_required,
                        "delete_version_after": "0s",
                        "custom_metadata": secret.custom_metadata,
                        "created_time": secret.created_time,
                        "updated_time": secret.updated_time,
                        "versions": {
                            str(v): {
                                "created_time": e["created_time"],
                                "deletion_time": "",
                                "destroyed": False,
                            }
                            for v, e in secret.versions.items()
                        },
                    }
                }
            )
        if kind == "metadata" and method == "POST":
            custom = body.get("custom_metadata")
            if custom is not None:
                problem = _custom_metadata_problem(custom)
                if problem:
                    return _error(400, problem)
            # path_metadata.go, pathMetadataWrite: metadata_cas is checked against current_metadata_version
            # when given, and required when the key or the mount's config says metadata_cas_required.
            secret = secrets_.get(key)
            required = self.kv_metadata_cas_required[mount] or (
                secret is not None and secret.metadata_cas_required
            )
            given = body.get("metadata_cas")
            if required and given is None:
                return _error(400, "metadata check-and-set parameter required for this call")
            if given is not None:
                if not isinstance(given, int) or isinstance(given, bool):
                    return _error(400, "error parsing metadata_cas")
                if secret is None and given != 0:
                    return _error(400, "metadata_cas must be 0 when creating new metadata")
                if secret is not None and given != secret.current_metadata_version:
                    return _error(400, "metadata check-and-set parameter does not match the current version")
            if secret is None:
                secret = secrets_[key] = KvSecret()
            secret.current_metadata_version += 1
            if custom is not None:
                secret.custom_metadata = dict(custom)
            if "cas_required" in body:
                secret.cas_required = bool(body["cas_required"])
            if "metadata_cas_required" in body:
                secret.metadata_cas_required = bool(body["metadata_cas_required"])
            secret.updated_time = _now_rfc3339()
            return web.Response(status=204)
        return _error(405, "unsupported operation")

    def _kv_config(self, method: str, mount: str, body: dict[str, Any]) -> web.Response:
        """``<mount>/config`` (path_config.go): the mount-wide cas_required and metadata_cas_required."""
        if method == "GET":
            return web.json_response(
                {
                    "data": {
                        "cas_required": self.kv_cas_required[mount],
                        "metadata_cas_required": self.kv_metadata_cas_required[mount],
                        "max_versions": 0,
                        "delete_version_after": "0s",
                    }
                }
            )
        if method == "POST":
            if "cas_required" in body:
                self.kv_cas_required[mount] = bool(body["cas_required"])
            if "metadata_cas_required" in body:
                self.kv_metadata_cas_required[mount] = bool(body["metadata_cas_required"])
            return web.Response(status=204)
        return _error(405, "unsupported operation")

    @staticmethod
    def _version_meta(secret: KvSecret, version: int) -> dict[str, Any]:
        return {
            "version": version,
            "created_time": secret.versions[version]["created_time"],
            "deletion_time": "",
            "destroyed": False,
            "custom_metadata": secret.custom_metadata,
        }


class _Engines:
    """The transit and database engines."""

    transit: dict[str, dict[str, TransitKey]]
    static_roles: dict[str, dict[str, StaticRole]]
    connections: dict[str, dict[str, Connection]]

    # -- transit -----------------------------------------------------------------------------------------

    def _transit(self, method: str, mount: str, rest: str) -> web.Response:
        parts = rest.split("/")
        if len(parts) < 2 or parts[0] != "keys":
            return _error(404, "no handler for route")
        key = self.transit[mount].get(parts[1])
        if len(parts) == 2 and method == "GET":
            if key is None:
                return _error(404)
            return web.json_response({"data": self._key_policy(parts[1], key)})
        if len(parts) == 3 and parts[2] == "rotate" and method == "POST":
            if key is None:
                return _error(400, "key not found")
            key.versions[key.latest_version + 1] = int(time.time())
            return web.json_response({"data": self._key_policy(parts[1], key)})
        return _error(405, "unsupported operation")

    @staticmethod
    def _key_policy(name: str, key: TransitKey) -> dict[str, Any]:
        keys: dict[str, Any]
        if key.type in ASYMMETRIC:
            keys = {
                str(v): {
                    "name": key.type if not key.type.startswith("ecdsa") else "P-" + key.type[-3:],
                    "public_key": f"-----BEGIN PUBLIC KEY-----\n(version {v})\n-----END PUBLIC KEY-----\n",
                    "certificate_chain": "",
                    "creation_time": datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
                }
                for v, t in key.versions.items()
            }
        else:
            keys = {str(v): t for v, t in key.versions.items()}
        asymmetric = key.type in ASYMMETRIC
        return {
            "name": name,
            "type": key.type,
            "latest_version": key.latest_version,
            "min_decryption_version": 1,
            "min_encryption_version": 0,
            "keys": keys,
            "deletion_allowed": False,
            "derived": False,
            "exportable": False,
            "supports_encryption": not key.type.startswith(("ecdsa", "ed25519")),
            "supports_decryption": not key.type.startswith(("ecdsa", "ed25519")),
            "supports_signing": asymmetric,
            "supports_derivation": key.type in ("aes256-gcm96", "chacha20-poly1305", "ed25519"),
        }

    # -- database ----------------------------------------------------------------------------------------

    def _database(self, method: str, mount: str, rest: str) -> web.Response:
        kind, _, name = rest.partition("/")
        roles = self.static_roles[mount]
        if kind == "static-roles" and method == "GET":
            role = roles.get(name)
            if role is None:
                return _error(404)
            return web.json_response(
                {
                    "data": {
                        "db_name": role.db_name,
                        "username": role.username,
                        "rotation_period": role.rotation_period,
                        "rotation_statements": [],
                        "credential_type": "password",
                        "last_vault_rotation": role.last_vault_rotation,
                    }
                }
            )
        if kind == "rotate-role" and method == "POST":
            if not name:
                return _error(400, "empty role name attribute given")
            role = roles.get(name)
            if role is None:
                return _error(400, "no static role found for role name")
            role.rotations += 1
            role.last_vault_rotation = _now_rfc3339()
            return web.Response(status=204)
        if kind == "rotate-root" and method == "POST":
            if not name:
                return _error(400, "empty name attribute given")
            connection = self.connections[mount].get(name)
            if connection is None:
                return _error(500, "unable to rotate root credentials: no configuration found")
            connection.root_rotations += 1
            return web.Response(status=204)
        return _error(405, "unsupported operation")


class OpenBaoDouble(_KvV2, _Engines):
    """State, faults and the aiohttp app. Start it with :meth:`start`; its address is :attr:`url`."""

    def __init__(self, *, namespace: str | None = None) -> None:
        self.namespace = namespace.strip("/") + "/" if namespace else None
        self.sealed = False
        self.leader: str | None = None  # set on a standby: 307 to this address
        self.standby_without_leader = False
        self.token_ttl: float = 3600
        self.token_max_ttl: float | None = None
        self.tokens: dict[str, Token] = {}
        self.issued: list[str] = []  # every token ever handed out, revoked or not
        self.kubernetes_roles: dict[str, dict[str, set[str]]] = {"kubernetes": {}}  # mount -> role -> jwts
        self.approles: dict[str, dict[str, str]] = {"approle": {}}  # mount -> role_id -> secret_id
        self.kv: dict[str, dict[str, KvSecret]] = {"secret": {}}
        self.kv_cas_required: dict[str, bool] = {"secret": False}  # <mount>/config cas_required
        self.kv_metadata_cas_required: dict[str, bool] = {"secret": False}  # ... metadata_cas_required
        self.wrapped: dict[str, tuple[str, dict[str, Any]]] = {}  # wrapping token -> (creation path, data)
        self.transit: dict[str, dict[str, TransitKey]] = {"transit": {}}
        self.static_roles: dict[str, dict[str, StaticRole]] = {"database": {}}
        self.connections: dict[str, dict[str, Connection]] = {"database": {}}
        self.denied: list[re.Pattern[str]] = []
        self.faults: list[Fault] = []
        self.before: list[tuple[str, re.Pattern[str], Callable[[], object]]] = []
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- set-up helpers used by tests --------------------------------------------------------------------

    def issue_token(self, *, ttl: float | None = None, renewable: bool = True) -> str:
        value = "s." + secrets.token_urlsafe(18)
        ttl = self.token_ttl if ttl is None else ttl
        now = time.monotonic()
        self.issued.append(value)
        self.tokens[value] = Token(
            value, ["default"], ttl, self.token_max_ttl, now, now + ttl if ttl else None, renewable
        )
        return value

    def revoke_all(self) -> None:
        self.tokens.clear()

    def wrap_secret_id(self, role_id: str, *, mount: str = "approle", role_name: str = "runtime-glue") -> str:
        """What a trusted orchestrator gets from ``POST auth/<mount>/role/<name>/secret-id`` with
        ``X-Vault-Wrap-TTL``: a new secret id for the role (the old one stops working), wrapped; returns the
        wrapping token."""
        secret_id = secrets.token_hex(18)
        self.approles[mount][role_id] = secret_id
        return self.wrap(
            f"auth/{mount}/role/{role_name}/secret-id",
            {"secret_id": secret_id, "secret_id_accessor": secrets.token_hex(8), "secret_id_ttl": 600},
        )

    def wrap(self, creation_path: str, data: dict[str, Any]) -> str:
        """A response wrapped in a single-use wrapping token (``X-Vault-Wrap-TTL``)."""
        token = "s." + secrets.token_urlsafe(18)
        self.issued.append(token)
        self.wrapped[token] = (creation_path, data)
        return token

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        errors: list[str] | None = None,
        *,
        times: int = 1,
        after: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching method and ``path`` (regex after /v1/) with status."""
        self.faults.append(
            Fault(method.upper(), re.compile(path), status, errors or [], times, after, headers or {})
        )

    def on(self, method: str, path: str, action: Callable[[], object]) -> None:
        """Run ``action`` once, just before the next matching request is served (a concurrent writer)."""
        self.before.append((method.upper(), re.compile(path), action))

    def count(self, method: str, path: str) -> int:
        """How many requests matching method and path (regex after /v1/) succeeded (2xx)."""
        pattern = re.compile(path)
        return sum(
            1 for s in self.seen if s.method == method and pattern.fullmatch(s.path) and 200 <= s.status < 300
        )

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = (
            f"{'https' if ssl_context else 'http'}://{host if ssl_context is None else 'localhost'}:{port}"
        )
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- request handling --------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"].strip("/")
        method = request.method.upper()
        if method == "PUT":
            method = "POST"
        if method == "GET" and request.query.get("list") == "true":
            method = "LIST"
        namespace = request.headers.get("X-Vault-Namespace")
        response = await self._answer(request, method, path)
        self.seen.append(Seen(method, path, namespace, response.status))
        return response

    async def _answer(self, request: web.Request, method: str, path: str) -> web.StreamResponse:
        for index, (m, pattern, action) in enumerate(self.before):
            if m == method and pattern.fullmatch(path):
                del self.before[index]
                action()
                break
        if path == "sys/health":
            return self._health(request)
        if self.sealed:
            return _error(503, "Vault is sealed")
        if self.leader is not None:
            location = f"{self.leader}/v1/{path}"
            if request.query_string:
                location += "?" + request.query_string
            return web.Response(status=307, headers={"Location": location})
        if self.standby_without_leader:
            if request.headers.get("X-Vault-No-Request-Forwarding"):
                return _error(503, "no active Vault instance found")
            return _error(500, "local node not active but active cluster node not found")
        fault = self._fault(method, path)
        if fault is not None and not fault.after:
            return _error(fault.status, *fault.errors, headers=fault.headers)
        if self.namespace is not None:
            given = (request.headers.get("X-Vault-Namespace") or "").strip("/") + "/"
            if given != self.namespace:
                return _error(404, f'no handler for route "{path}". route entry not found.')
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                parsed = await request.json()
            except ValueError:
                return _error(400, "failed to parse JSON input")
            body = parsed if isinstance(parsed, dict) else {}
        response = self._route(request, method, path, body)
        if fault is not None:  # the request took effect; the answer is lost
            return _error(fault.status, *fault.errors, headers=fault.headers)
        return response

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.pattern.fullmatch(path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _health(self, request: web.Request) -> web.Response:
        standby = self.leader is not None or self.standby_without_leader
        body = {"initialized": True, "sealed": self.sealed, "standby": standby, "version": "2.4.0"}
        if self.sealed:
            status = int(request.query.get("sealedcode", 503))
        elif standby:
            status = (
                200
                if request.query.get("standbyok") == "true"
                else int(request.query.get("standbycode", 429))
            )
        else:
            status = int(request.query.get("activecode", 200))
        return web.json_response(body, status=status)

    def _token(self, request: web.Request) -> Token | None:
        value = request.headers.get("X-Vault-Token")
        if value is None:
            auth = request.headers.get("Authorization", "")
            value = auth[7:] if auth.startswith("Bearer ") else None
        token = self.tokens.get(value or "")
        if token is None:
            return None
        if token.expires is not None and time.monotonic() >= token.expires:
            del self.tokens[token.value]
            return None
        return token

    def _route(self, request: web.Request, method: str, path: str, body: dict[str, Any]) -> web.Response:
        parts = path.split("/")
        if len(parts) >= 3 and parts[0] == "auth" and parts[-1] == "login" and method == "POST":
            return self._login("/".join(parts[1:-1]), body)
        if path in ("sys/wrapping/lookup", "sys/wrapping/unwrap") and method == "POST":
            return self._wrapping(request, path, body)
        token = self._token(request)
        if token is None or any(p.fullmatch(path) for p in self.denied):
            return _error(403, "permission denied")
        if path == "auth/token/lookup-self" and method == "GET":
            return self._lookup_self(token)
        if path == "auth/token/renew-self" and method == "POST":
            return self._renew_self(token, body)
        if path == "auth/token/revoke-self" and method == "POST":
            del self.tokens[token.value]
            return web.Response(status=204)
        mount, _, rest = path.partition("/")
        if mount in self.kv:
            return self._kv(request, method, mount, rest, body)
        if mount in self.transit:
            return self._transit(method, mount, rest)
        if mount in self.static_roles:
            return self._database(method, mount, rest)
        return _error(404, f'no handler for route "{path}". route entry not found.')

    # -- auth --------------------------------------------------------------------------------------------

    def _grant(self) -> web.Response:
        value = self.issue_token()
        token = self.tokens[value]
        return web.json_response(
            {
                "auth": {
                    "client_token": value,
                    "accessor": secrets.token_hex(12),
                    "policies": token.policies,
                    "lease_duration": int(token.ttl),
                    "renewable": token.renewable,
                }
            }
        )

    def _login(self, mount: str, body: dict[str, Any]) -> web.Response:
        if mount in self.kubernetes_roles:
            role = body.get("role")
            jwt = body.get("jwt")
            if not role or not jwt:
                return _error(400, "missing role" if not role else "missing jwt")
            roles = self.kubernetes_roles[mount]
            if role not in roles:
                return _error(400, f'invalid role name "{role}"')
            if jwt not in roles[role]:
                return _error(403, "permission denied")
            return self._grant()
        if mount in self.approles:
            role_id = body.get("role_id")
            if not role_id:
                return _error(400, "missing role_id")
            if self.approles[mount].get(role_id) != body.get("secret_id"):
                return _error(400, "invalid role or secret ID")
            return self._grant()
        return _error(400, f'no handler for route "auth/{mount}/login". route entry not found.')

    def _wrapping(self, request: web.Request, path: str, body: dict[str, Any]) -> web.Response:
        """lookup (unauthenticated) and unwrap: the wrapping token in the body or as the client token."""
        in_body = body.get("token")
        header = request.headers.get("X-Vault-Token")
        token = in_body or header
        if not token:
            return _error(400, 'missing "token" value in input')
        if token not in self.wrapped:
            return _error(400, "wrapping token is not valid or does not exist")
        creation_path, data = self.wrapped[token]
        if path == "sys/wrapping/lookup":
            return web.json_response(
                {
                    "data": {
                        "creation_path": creation_path,
                        "creation_time": _now_rfc3339(),
                        "creation_ttl": 600,
                    }
                }
            )
        if in_body and header != in_body and self._token(request) is None:
            return _error(403, "permission denied")  # unwrap with a token in the body needs a client token
        del self.wrapped[token]  # single use, even when the call below goes wrong
        if in_body and header == in_body:
            # Used twice (client token and body): revoked and the value lost (wrapping-unwrap.mdx).
            return _error(400, "wrapping token is not valid or does not exist")
        return web.json_response({"data": dict(data), "lease_duration": 0, "renewable": False})

    def _lookup_self(self, token: Token) -> web.Response:
        remaining = 0 if token.expires is None else max(0, int(token.expires - time.monotonic()))
        return web.json_response(
            {"data": {"ttl": remaining, "renewable": token.renewable, "policies": token.policies}}
        )

    def _renew_self(self, token: Token, body: dict[str, Any]) -> web.Response:
        if not token.renewable or token.expires is None:
            return _error(400, "lease is not renewable")
        now = time.monotonic()
        lease = token.ttl
        if token.max_ttl is not None:
            lease = max(0.0, min(lease, token.issued + token.max_ttl - now))
        token.expires = now + lease
        return web.json_response(
            {"auth": {"client_token": token.value, "lease_duration": int(lease), "renewable": True}}
        )


def _custom_metadata_problem(custom: Any) -> str | None:
    if not isinstance(custom, dict):
        return "custom_metadata must be a map of strings"
    if len(custom) > 64:
        return "payload must contain at most 64 keys"
    for key, value in custom.items():
        if not isinstance(value, str):
            return f"custom_metadata values must be strings: {key}"
        if len(key) > 128:
            return f"length of key {key!r} is {len(key)} but max is 128"
        if len(value) > 512:
            return f"length of value for key {key!r} is {len(value)} but max is 512"
    return None


def _error(status: int, *errors: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": list(errors)}, status=status, headers=headers)
