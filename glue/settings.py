"""One validated settings object, loaded once (YAML file + environment) and passed down.

Keys in the file are camelCase (``maxBodyBytes``); environment variables override them with the
prefix ``GLUE_`` and ``__`` between nested keys (``GLUE_SERVER__PORT=9000``,
``GLUE_JOURNAL__BACKEND=postgres``). Nothing here reads the environment at import time.

Secrets are never written in the file: a :class:`SecretRef` names a file (a mounted Secret) or an
environment variable, and a previous value that stays valid during a rotation.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import typing
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "ENV_PREFIX",
    "MINIO_EVENT_NAMES",
    "NOT_SETTINGS",
    "OTLP_ENDPOINT_VARIABLES",
    "Admin",
    "Archive",
    "ArgoEventSource",
    "ArgoEvents",
    "ArgoEventsAuth",
    "ArgoEventsTls",
    "Auth",
    "AuthType",
    "ClientCert",
    "ConfigError",
    "Endpoint",
    "Execution",
    "FormatName",
    "JetStream",
    "JetStreamSubject",
    "Journal",
    "Kafka",
    "KafkaFormat",
    "KafkaOutput",
    "KafkaSasl",
    "KafkaTls",
    "KafkaTopic",
    "Lockout",
    "Logging",
    "Minio",
    "MinioBucket",
    "MinioEventName",
    "Model",
    "Oidc",
    "SamplerName",
    "SecretRef",
    "Server",
    "Settings",
    "Sources",
    "Tls",
    "Tracing",
    "environment_overrides",
    "from_mapping",
    "load",
    "secret_variables",
    "subject_matches",
]


class ConfigError(Exception):
    """A configuration problem, phrased for the operator: the file, the field and the reason."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"{source}: {field}: {reason}" if field else f"{source}: {reason}" for field, reason in problems
        ]
        super().__init__("\n".join(lines))


class Model(BaseModel):
    """Base of every settings group: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SecretRef(Model):
    """Where a secret comes from. The value is read when the settings load, never logged."""

    file: Path | None = None
    env: str | None = None
    value: SecretStr | None = Field(
        default=None, description="Inline value; for local tests only, never in a committed file."
    )
    previous_file: Path | None = None
    previous_env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if sum(x is not None for x in (self.file, self.env, self.value)) != 1:
            raise ValueError("give exactly one of file, env or value")
        return self

    def _read(self, file: Path | None, env: str | None) -> str | None:
        if file is not None:
            try:
                return file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read secret file {file}: {exc.strerror}") from None
        if env is not None:
            if env not in os.environ:
                raise ValueError(f"environment variable {env} is not set")
            return os.environ[env]
        return None

    def resolve(self) -> tuple[bytes, ...]:
        """The accepted values: the current one, then the previous one if configured."""
        current = self.value.get_secret_value() if self.value is not None else self._read(self.file, self.env)
        values = [current or ""]
        if self.previous_file is not None or self.previous_env is not None:
            previous = self._read(self.previous_file, self.previous_env)
            if previous:
                values.append(previous)
        if not values[0]:
            raise ValueError("secret is empty")
        return tuple(v.encode() for v in values)


AuthType = Literal["none", "header", "gitlab-token", "gitlab-signature", "bearer", "hmac-sha256"]


class Auth(Model):
    """How an endpoint authenticates its caller.

    - ``header``: the whole ``Authorization`` value compared verbatim (Harbor's auth header).
    - ``gitlab-token``: ``X-Gitlab-Token``.
    - ``gitlab-signature``: Standard Webhooks signature (``webhook-id``, ``webhook-timestamp``,
      ``webhook-signature``) with a ``whsec_`` key; ``toleranceSeconds`` bounds clock skew.
    - ``bearer``: ``Authorization: Bearer <token>`` (MinIO's ``auth_token``).
    - ``hmac-sha256``: hex HMAC-SHA256 of the body in ``signatureHeader`` (``sha256=`` prefix allowed).
    """

    type: AuthType = "none"
    secret: SecretRef | None = None
    tolerance_seconds: int = Field(default=300, ge=1)
    signature_header: str = "X-Signature-256"
    refuse_replays: bool = Field(
        default=True,
        description="gitlab-signature, hmac-sha256: refuse a signature already accepted within "
        "toleranceSeconds (401). Turn off for a sender that resends the same signed bytes after a "
        "timeout and must then see 200 rather than 401.",
    )

    @model_validator(mode="after")
    def _secret_needed(self) -> Auth:
        if self.type != "none" and self.secret is None:
            raise ValueError(f"auth type {self.type!r} needs a secret")
        return self


FormatName = Literal["harbor", "gitlab", "minio", "argo", "cloudevents"]

#: ``idField``: keys joined by dots, none empty.
_ID_FIELD = r"^[^.]+(\.[^.]+)*$"
#: ``dedupWindow``'s default: see glue.formats.DEDUP_WINDOW (settings import no other glue module).
_DEDUP_WINDOW = 900.0


class ClientCert(Model):
    """mTLS for one endpoint: a request without a client certificate that ``server.tls.clientCaFile``
    verified is refused (401), one whose names are not listed is refused (403)."""

    names: list[str] = Field(
        default=[],
        description="Accepted subject common names or DNS subjectAltNames; empty: any verified certificate.",
    )


class Endpoint(Model):
    """One webhook path: what it accepts and how the caller proves who it is."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$")
    format: FormatName
    auth: Auth = Auth()
    client_cert: ClientCert | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1, le=64 << 20)
    type: str | None = Field(default=None, description="argo: CloudEvent type for plain JSON bodies.")
    source: str | None = Field(
        default=None, description="argo/harbor: CloudEvent source for bodies without one."
    )
    id_header: str | None = Field(default=None, description="argo: header whose value is the event id.")
    id_field: str | None = Field(
        default=None,
        pattern=_ID_FIELD,
        description="argo: dotted path to the event id in a JSON body (a trigger parameter's dest).",
    )
    dedup_window: float = Field(
        default=_DEDUP_WINDOW,
        ge=0,
        description="Seconds within which equal bodies without a producer id are one event (retries); "
        "the same body later is a new event.",
    )


class Tls(Model):
    """HTTPS on the listener. The files are a cert-manager Secret mount (``tls.crt``, ``tls.key``,
    ``ca.crt``); they are re-read when they change, and new handshakes take the new certificate."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = Field(
        default=None, description="CA that signs client certificates (endpoints with clientCert)."
    )
    reload_seconds: float = Field(default=10.0, gt=0, description="How often the files are checked.")


class Lockout(Model):
    """Credential guessing: an address with ``failures`` 401s within ``windowSeconds`` is answered 429
    (with Retry-After) for ``seconds``, on every endpoint. ``failures: 0`` turns it off."""

    failures: int = Field(default=10, ge=0)
    window_seconds: float = Field(default=60.0, gt=0)
    seconds: float = Field(default=300.0, gt=0)


class Server(Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_backlog: int = Field(
        default=100_000, ge=1, description="Pending events above which intake answers 503."
    )
    shutdown_timeout: float = Field(default=10.0, ge=0)
    tls: Tls | None = None
    max_header_bytes: int = Field(
        default=8190, ge=1024, le=1 << 20, description="Longest request line and longest header (400)."
    )
    max_headers: int = Field(default=100, ge=8, le=10_000, description="Most header fields a request has.")
    idle_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a connection may go without a whole request head, from its opening or its "
        "last answer: idle keep-alive connections and clients sending headers slowly are closed.",
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to read a request body; slower is answered 408 and closed."
    )
    max_requests_per_connection: int = Field(
        default=1000,
        ge=1,
        description="Requests on one keep-alive connection; the last is answered with Connection: close.",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default=[],
        description="Proxies (CIDRs) whose X-Forwarded-For names the sender the lockout counts; empty: "
        "the peer address is the sender.",
    )
    lockout: Lockout = Lockout()
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="uvloop (libuv) is faster; asyncio is the standard library's loop."
    )


#: The samplers of the OpenTelemetry SDK's ``OTEL_TRACES_SAMPLER``, by their standard names.
SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]

#: The standard variables that set the OTLP traces endpoint, the traces-only one first.
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _link_template(value: str | None) -> str | None:
    """A trace link template names ``{trace_id}`` and nothing else to fill in."""
    if value is None:
        return None
    try:
        filled = value.format(trace_id="0" * 32)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"may fill in only {{trace_id}} ({type(exc).__name__}: {exc})") from None
    if filled == value:
        raise ValueError("does not name {trace_id}")
    return value


class Tracing(Model):
    """OpenTelemetry traces (see glue.tracing): off unless an OTLP endpoint is set, here or by the
    standard variables. The standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ...) override these
    fields, as ``GLUE_*`` ones override the file."""

    endpoint: str | None = Field(
        default=None,
        description="OTLP endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT: a base URL (http/protobuf appends "
        "/v1/traces). Unset (here and in the environment): no tracing at all.",
    )
    protocol: Literal["http/protobuf", "grpc"] = Field(
        default="http/protobuf", description="OTLP transport; grpc needs the `grpc` extra installed."
    )
    service_name: str = Field(default="runtime-glue", min_length=1, description="The service.name resource.")
    sampler: SamplerName = Field(default="parentbased_always_on", description="As OTEL_TRACES_SAMPLER.")
    sampler_arg: float | None = Field(
        default=None, ge=0, le=1, description="The ratio of the traceidratio samplers (default 1.0)."
    )
    resource_attributes: dict[str, str] = Field(
        default={}, description="Resource attributes, as OTEL_RESOURCE_ATTRIBUTES (k8s.namespace.name, ...)."
    )
    link_template: Annotated[str | None, AfterValidator(_link_template)] = Field(
        default=None,
        description="Where a trace is shown, for glue explain and glue events show: "
        "https://tempo.example/trace/{trace_id}",
    )

    def exporting(self, environ: typing.Mapping[str, str]) -> bool:
        """Whether traces are exported: an endpoint is set (here or by a standard variable) and the
        SDK is not disabled (``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``)."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
        if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
            return False
        return bool(self.endpoint or any(environ.get(name) for name in OTLP_ENDPOINT_VARIABLES))

    def link(self, trace_id: str) -> str | None:
        """The link to a trace by the template, if one is configured."""
        return self.link_template.format(trace_id=trace_id) if self.link_template else None


class Journal(Model):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: Path = Path("data/glue.db")
    dsn: SecretRef | None = Field(default=None, description="postgres: DSN from a file or the environment.")
    pool_size: int = Field(default=8, ge=1, le=128)
    group_commit_ms: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Extra wait to gather concurrent appends. 0: appends that arrive while a commit is "
        "being written share the next one (natural batching, no added latency).",
    )
    retention_days: float = Field(default=7.0, gt=0, description="Done events are pruned after this age.")
    synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="sqlite: full fsyncs every commit (an acknowledged event survives power loss); normal "
        "survives a crash of the process but may lose the last commits on power loss.",
    )
    durable_execution_commits: bool = Field(
        default=False,
        description="Claims, routing and outcomes wait for the WAL flush too. Off (default): a crash of "
        "the database server (postgres) or a power loss (sqlite) may lose its last moments of execution "
        "state, so those invocations run again (handlers are idempotent); intake always waits for the flush.",
    )

    @model_validator(mode="after")
    def _dsn_needed(self) -> Journal:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend postgres needs dsn")
        return self


class Logging(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


KafkaFormat = Literal["cloudevents", "minio", "argo", "argo-eventbus"]

#: An Argo EventSource (a Kubernetes name) and optionally one of its events, or "*" for every one.
_EVENT_SOURCE = r"^(\*|[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)?)$"


class ArgoEventSource(Model):
    """Which EventBus messages a source takes, and what it does with them. Written ``"*"``, ``"name"``
    or ``"name.event"`` alone, or as ``{name: ..., unwrap: gitlab}``."""

    name: str = Field(
        pattern=_EVENT_SOURCE,
        description="'*' (every EventSource), an EventSource name, or '<eventSource>.<eventName>'.",
    )
    unwrap: Literal["gitlab", "harbor", "minio"] | None = Field(
        default=None,
        description="Decode the delivery the EventSource wrapped with glue's decoder of this producer.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


def _event_sources_default() -> list[ArgoEventSource]:
    return [ArgoEventSource(name="*")]


class KafkaTopic(Model):
    """One consumed topic and the format of its records.

    - ``cloudevents``: the CloudEvents Kafka binding, binary (``ce_`` headers) or structured
      (``content-type: application/cloudevents+json``); the record key becomes ``partitionkey``.
    - ``minio``: MinIO's Kafka target (key ``bucket/object``, value ``{EventName, Key, Records}``).
    - ``argo``: Argo Events' Kafka trigger or any plain JSON; ``type``/``source`` name the event.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    format: KafkaFormat
    type: str | None = Field(default=None, description="argo: CloudEvent type for plain JSON records.")
    source: str | None = Field(default=None, description="argo: CloudEvent source for plain JSON records.")
    id_header: str | None = Field(default=None, description="argo: record header holding the event id.")
    id_field: str | None = Field(
        default=None,
        pattern=_ID_FIELD,
        description="argo: dotted path to the event id in a JSON record (a trigger parameter's dest).",
    )
    dedup_window: float = Field(
        default=_DEDUP_WINDOW,
        ge=0,
        description="Seconds within which equal records without a producer id are one event.",
    )
    event_sources: list[ArgoEventSource] | None = Field(
        default=None,
        min_length=1,
        description="argo-eventbus: the EventSources taken (by record key), first match applies; "
        "default every one, as sent.",
    )

    @model_validator(mode="after")
    def _event_sources_need_the_bus(self) -> KafkaTopic:
        if self.event_sources is not None and self.format != "argo-eventbus":
            raise ValueError("eventSources is for topics of format argo-eventbus")
        return self


class KafkaSasl(Model):
    """SASL authentication to the brokers (over TLS when ``tls`` is set)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str = Field(min_length=1)
    password: SecretRef


class KafkaTls(Model):
    """TLS to the brokers; without ``caFile`` the system trust store is used."""

    ca_file: Path | None = None
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = None
    key_password: SecretRef | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> KafkaTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give certFile and keyFile together")
        return self


class KafkaOutput(Model):
    """Publish what the handlers did, as CloudEvents (Kafka binding, binary mode), to one topic.

    Invocations are read from the journal as they settle; a restart resumes ``lookbackSeconds``
    back, so an outcome may be published twice (same CloudEvent id): consumers dedupe on the id."""

    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    dead_letters: bool = Field(default=True, description="Publish invocations that were dead-lettered.")
    outcomes: bool = Field(default=False, description="Publish finished invocations too.")
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    lookback_seconds: float = Field(default=300.0, ge=0, description="How far back a restart looks.")


class Kafka(Model):
    """The Kafka source: a consumer group journaling every record before committing its offset."""

    bootstrap_servers: Annotated[list[str], NoDecode] = Field(
        min_length=1, description="host:port list, or one comma-separated string."
    )
    group_id: str = Field(default="runtime-glue", min_length=1)
    client_id: str = "runtime-glue"
    topics: list[KafkaTopic] = Field(min_length=1)
    sasl: KafkaSasl | None = None
    tls: KafkaTls | None = None
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a group without a committed offset starts."
    )
    max_batch: int = Field(default=2000, ge=1, le=100_000, description="Most records per commit.")
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    retry_seconds: float = Field(
        default=1.0, gt=0, le=300, description="Pause before re-reading records the journal could not take."
    )
    output: KafkaOutput | None = Field(default=None, description="Handler outcomes and dead letters out.")

    @model_validator(mode="before")
    @classmethod
    def _split_servers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("bootstrapServers", "bootstrap_servers"):
                if isinstance(data.get(key), str):
                    data = {**data, key: [s.strip() for s in data[key].split(",") if s.strip()]}
        return data

    @model_validator(mode="after")
    def _unique_topics(self) -> Kafka:
        names = [topic.name for topic in self.topics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"topics listed twice: {', '.join(duplicates)}")
        return self

    def secrets(self) -> list[tuple[str, SecretRef]]:
        refs: list[tuple[str, SecretRef]] = []
        if self.sasl is not None:
            refs.append(("sasl.password", self.sasl.password))
        if self.tls is not None and self.tls.key_password is not None:
            refs.append(("tls.keyPassword", self.tls.key_password))
        return refs


#: The event names MinIO accepts (minio internal/event/name.go, ParseName): a listen stream or a
#: bucket notification asking for any other is refused with 400 InvalidArgument.
MINIO_EVENT_NAMES = (
    "s3:BucketCreated:*",
    "s3:BucketRemoved:*",
    "s3:ObjectAccessed:*",
    "s3:ObjectAccessed:Get",
    "s3:ObjectAccessed:GetRetention",
    "s3:ObjectAccessed:GetLegalHold",
    "s3:ObjectAccessed:Head",
    "s3:ObjectAccessed:Attributes",
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:PutRetention",
    "s3:ObjectCreated:PutLegalHold",
    "s3:ObjectCreated:PutTagging",
    "s3:ObjectCreated:DeleteTagging",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:NoOP",
    "s3:ObjectRemoved:DeleteAllVersions",
    "s3:LifecycleDelMarkerExpiration:Delete",
    "s3:Replication:*",
    "s3:Replication:OperationFailedReplication",
    "s3:Replication:OperationCompletedReplication",
    "s3:Replication:OperationMissedThreshold",
    "s3:Replication:OperationReplicatedAfterThreshold",
    "s3:Replication:OperationNotTracked",
    "s3:ObjectRestore:*",
    "s3:ObjectRestore:Post",
    "s3:ObjectRestore:Completed",
    "s3:ObjectTransition:*",
    "s3:ObjectTransition:Failed",
    "s3:ObjectTransition:Complete",
    "s3:Scanner:ManyVersions",
    "s3:Scanner:LargeVersions",
    "s3:Scanner:BigPrefix",
)


def _minio_event_name(name: str) -> str:
    if name in MINIO_EVENT_NAMES:
        return name
    family = name.rpartition(":")[0] + ":"
    same = [known for known in MINIO_EVENT_NAMES if family != ":" and known.startswith(family)]
    hint = (
        f"; MinIO knows {', '.join(same)}" if same else "; e.g. s3:ObjectCreated:*, s3:ObjectRemoved:Delete"
    )
    raise ValueError(f"{name!r} is not an event name MinIO accepts{hint}")


MinioEventName = Annotated[str, AfterValidator(_minio_event_name)]
_BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class MinioBucket(Model):
    """One bucket whose notifications the MinIO listen source follows."""

    name: str = Field(pattern=_BUCKET_NAME)
    prefix: str = Field(default="", description="Only objects whose key starts with this.")
    suffix: str = Field(default="", description="Only objects whose key ends with this.")
    events: list[MinioEventName] = Field(
        default=["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        min_length=1,
        description="MinIO event names, e.g. s3:ObjectCreated:* or s3:ObjectRemoved:Delete.",
    )


class Minio(Model):
    """A MinIO (S3) endpoint: the listen source, route enrichment and the archive use it."""

    endpoint: str = Field(pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$", description="host[:port], no scheme.")
    secure: bool = Field(default=True, description="HTTPS; verified against caFile, else the system CAs.")
    ca_file: Path | None = Field(default=None, description="PEM bundle of the CA that signed MinIO's cert.")
    region: str = "us-east-1"
    access_key: SecretRef | None = Field(default=None, description="Absent: anonymous requests.")
    secret_key: SecretRef | None = None
    session_token: SecretRef | None = None
    timeout: float = Field(default=10.0, gt=0, le=300, description="Connect and read timeout of a call.")
    buckets: list[MinioBucket] = Field(default=[], description="Buckets the listen source follows.")
    ping_seconds: int = Field(default=10, ge=1, le=300, description="Keep-alive interval asked of MinIO.")
    reconnect_initial: float = Field(default=0.5, gt=0, description="First reconnect delay (seconds).")
    reconnect_max: float = Field(default=30.0, gt=0, description="Reconnect delay cap (seconds).")
    max_line_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)

    @model_validator(mode="after")
    def _keys_together(self) -> Minio:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both accessKey and secretKey, or neither")
        if self.ca_file is not None and not self.secure:
            raise ValueError("caFile needs secure: true")
        names = [bucket.name for bucket in self.buckets]
        if len(set(names)) != len(names):
            raise ValueError("a bucket is listed twice")
        return self


class ArgoEventsAuth(Model):
    """Argo's client-auth Secret of the EventBus (key ``client-auth``) mounted as it is: YAML
    ``username: ...`` / ``password: ...`` (or ``token: ...``)."""

    file: Path

    def credentials(self) -> dict[str, str]:
        """``{"user": ..., "password": ...}`` or ``{"token": ...}``; a ValueError names the file, never
        a value."""
        try:
            text = self.file.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {self.file}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"{self.file} is not YAML (expected username: and password: lines)") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.file} must hold username: and password: (or token:)")
        username, password, token = data.get("username"), data.get("password"), data.get("token")
        if username is not None and password is not None:
            return {"user": str(username), "password": str(password)}
        if token is not None and username is None:
            return {"token": str(token)}
        raise ValueError(f"{self.file} must hold username: and password: (or token:)")


class ArgoEventsTls(Model):
    """TLS to the EventBus: Argo's server certificate is self-signed, its CA in Secret
    ``eventbus-<bus>-js-server`` (key ``ca-cert``). Without ``caFile`` the system trust store is used."""

    ca_file: Path | None = None
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> ArgoEventsTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give certFile and keyFile together")
        return self


class _JetStreamConsumer(Model):
    """A JetStream stream read by a durable pull consumer of glue's own, at least once: the connection
    and the consumer (shared by the Argo EventBus and the generic JetStream source)."""

    url: Annotated[list[str], NoDecode] = Field(
        min_length=1,
        description="nats://host:port (or tls://), a list or one comma-separated string; Argo's is "
        "nats://eventbus-<bus>-js-svc.<namespace>.svc:4222.",
    )
    auth: ArgoEventsAuth | None = None
    tls: ArgoEventsTls | None = None
    durable: str = Field(
        default="runtime-glue",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This reader's durable consumer (never a Sensor's).",
    )
    deliver: Literal["new", "all"] = Field(
        default="new",
        description="Where a new durable consumer starts: new messages, or all the stream keeps (a first "
        "import). An existing consumer goes on from where it is.",
    )
    max_in_flight: int = Field(
        default=2048,
        ge=1,
        le=100_000,
        description="Messages fetched and not yet acknowledged, at most.",
    )
    ack_wait: float = Field(
        default=30.0, ge=1, le=3600, description="Seconds before an unacknowledged message is sent again."
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=300)
    reconnect_initial: float = Field(default=0.5, gt=0, description="First reconnect delay (seconds).")
    reconnect_max: float = Field(default=30.0, gt=0, description="Reconnect delay cap (seconds).")

    @model_validator(mode="before")
    @classmethod
    def _split_urls(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            data = {**data, "url": [s.strip() for s in data["url"].split(",") if s.strip()]}
        return data

    @model_validator(mode="after")
    def _check(self) -> _JetStreamConsumer:
        for url in self.url:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"url {url!r} must start with nats:// or tls://")
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError("reconnectMax must be at least reconnectInitial")
        return self


class ArgoEvents(_JetStreamConsumer):
    """Argo Events' JetStream EventBus read by a durable pull consumer of glue's own, at least once."""

    event_sources: list[ArgoEventSource] = Field(
        default_factory=_event_sources_default,
        min_length=1,
        description="The EventSources taken; the first entry that matches a message applies.",
    )
    stream: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")


#: A NATS subject a consumer filters on: tokens split by '.', '*' one token, '>' the rest (last only).
_NATS_SUBJECT = r"^(?:[^.*> \t\r\n]+|\*)(?:\.(?:[^.*> \t\r\n]+|\*))*(?:\.>)?$|^>$"


class JetStreamSubject(Model):
    """Messages on a subject (NATS wildcards ``*`` and ``>``) and their format, as a Kafka topic's.

    - ``cloudevents``: the CloudEvents NATS binding, binary (``ce-`` headers) or structured;
    - ``minio``: MinIO's NATS target (the notification ``{EventName, Key, Records}``);
    - ``argo``: any plain JSON; ``type``/``source`` name the event."""

    subject: str = Field(pattern=_NATS_SUBJECT)
    format: Literal["cloudevents", "minio", "argo"]
    type: str | None = Field(default=None, description="argo: CloudEvent type for plain JSON messages.")
    source: str | None = Field(default=None, description="argo: CloudEvent source for plain JSON messages.")
    id_header: str | None = Field(default=None, description="argo: message header holding the event id.")
    id_field: str | None = Field(
        default=None, pattern=_ID_FIELD, description="argo: dotted path to the event id in a JSON message."
    )
    dedup_window: float = Field(
        default=_DEDUP_WINDOW,
        ge=0,
        description="Seconds within which equal messages without a producer id are one event.",
    )


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` stands for one token, a last ``>`` for one or more."""
    wanted, got = pattern.split("."), subject.split(".")
    if wanted[-1] == ">":
        if len(got) < len(wanted):
            return False
        wanted, got = wanted[:-1], got[: len(wanted) - 1]
    elif len(got) != len(wanted):
        return False
    return all(w in ("*", g) for w, g in zip(wanted, got, strict=True))


class JetStream(_JetStreamConsumer):
    """Any JetStream stream of CloudEvents (or MinIO notifications, or plain JSON), by subject."""

    stream: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    subjects: list[JetStreamSubject] = Field(
        min_length=1, description="The subjects taken and their formats; the first that matches applies."
    )

    def entry_for(self, subject: str) -> JetStreamSubject | None:
        """The first ``subjects`` entry that takes messages on ``subject``."""
        return next((entry for entry in self.subjects if subject_matches(entry.subject, subject)), None)


class Sources(Model):
    """Ways in besides the HTTP endpoints; each subsystem adds its typed group here."""

    kafka: Kafka | None = None
    argo_events: ArgoEvents | None = Field(default=None, description="Argo Events' JetStream EventBus.")
    jetstream: JetStream | None = Field(default=None, description="A JetStream stream, format by subject.")
    minio: Minio | None = Field(default=None, description="MinIO connection and listened buckets.")


class Archive(Model):
    """Recordings and dead letters written to a bucket (of sources.minio) as JSON lines by date."""

    bucket: str = Field(pattern=_BUCKET_NAME)
    prefix: str = Field(default="glue", pattern=r"^[A-Za-z0-9._/-]*$")
    recordings: bool = Field(default=False, description="Every delivery, as `glue replay` reads it.")
    dead_letters: bool = Field(default=True, description="Every dead-lettered invocation.")
    audit: bool = Field(default=True, description="Every operator action of the audit trail (glue audit).")
    flush_seconds: float = Field(default=10.0, gt=0, le=3600, description="Longest a line waits.")
    max_object_bytes: int = Field(default=8 << 20, ge=1024, description="An object is cut at this size.")
    max_buffer_bytes: int = Field(
        default=64 << 20, ge=1024, description="Lines held while the bucket is unreachable; oldest dropped."
    )


def _http_url(text: str, *, loopback_http: bool) -> str:
    """An absolute http(s) URL without query or fragment: https, or http only to this machine when
    ``loopback_http`` (a test issuer, a port-forward), since codes and tokens cross it."""
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{text!r} is not an absolute http(s) URL")
    if url.query or url.fragment:
        raise ValueError(f"{text!r} may not carry a query or fragment")
    if loopback_http and url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"{text!r}: use https (plain http only to localhost): codes and tokens cross it")
    return text


def _claim_path(text: str) -> str:
    """A claim name, or a dotted path of them into nested objects (``realm_access.roles``)."""
    if not text or "" in text.split("."):
        raise ValueError(f"{text!r} is not a claim name or a dotted path of them (realm_access.roles)")
    return text


class Oidc(Model):
    """Single sign-on through OpenID Connect (glue.oidc): bearer JWTs for the admin API, and the
    authorization-code flow with PKCE for the console. A user's role comes from a claim of the token:
    a value listed in ``operators`` acts, one in ``viewers`` reads, anyone else is refused."""

    issuer: Annotated[str, AfterValidator(lambda text: _http_url(text, loopback_http=True))] = Field(
        description="The issuer URL exactly as the provider names it (Keycloak: https://HOST/realms/REALM)."
    )
    client_id: str = Field(min_length=1, description="The client registered at the provider for glue.")
    client_secret: SecretRef | None = Field(
        default=None, description="A confidential client's secret; a public client (PKCE only) has none."
    )
    audience: str | None = Field(
        default=None, min_length=1, description="A bearer JWT's `aud` must contain it (default: clientId)."
    )
    username_claim: str = Field(
        default="preferred_username",
        min_length=1,
        description="The claim naming the user in the audit trail.",
    )
    roles_claim: Annotated[str, AfterValidator(_claim_path)] = Field(
        default="groups",
        description="The claim holding the user's groups or roles; a dotted path reaches into objects "
        "(realm_access.roles).",
    )
    operators: list[str] = Field(default=[], description="Claim values whose users act (role operator).")
    viewers: list[str] = Field(default=[], description="Claim values whose users only read (role viewer).")
    scopes: list[str] = Field(
        default=["openid", "profile", "email"], description="Scopes the console's login asks for."
    )
    redirect_url: Annotated[str, AfterValidator(lambda text: _http_url(text, loopback_http=False))] | None = (
        Field(
            default=None,
            description="The console's callback URL registered at the provider (…/ui/login/sso/callback); "
            "default: built from the request.",
        )
    )
    trust_forwarded_headers: bool = Field(
        default=False,
        description="Build the callback URL from X-Forwarded-Proto and X-Forwarded-Host (behind a proxy "
        "that sets them).",
    )
    ca_file: Path | None = Field(
        default=None, description="CA bundle for the issuer's TLS (default: system)."
    )

    @model_validator(mode="after")
    def _roles_and_scopes(self) -> Oidc:
        if not self.operators and not self.viewers:
            raise ValueError("operators or viewers: list the claim values that map users to a role")
        if "openid" not in self.scopes:
            raise ValueError("scopes: must include openid")
        return self

    @property
    def api_audience(self) -> str:
        """What a bearer JWT's ``aud`` must contain."""
        return self.audience or self.client_id


class Admin(Model):
    """The admin API (glue.admin_api): the operators' commands over HTTP on a port of its own, with
    bearer tokens (static ones, or JWTs of the ``oidc`` issuer). Off unless configured; the webhook
    port never serves it."""

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    token: SecretRef | None = Field(default=None, description="One token, named `admin` in the audit trail.")
    tokens: dict[str, SecretRef] = Field(
        default={}, description="Named tokens: the name is who acts in the audit trail."
    )
    viewers: list[str] = Field(
        default=[], description="Names of tokens that may only read (the others are operators: they act)."
    )
    oidc: Oidc | None = Field(default=None, description="Single sign-on through an OpenID Connect issuer.")
    console: bool = Field(
        default=True, description="Serve the operator console at /ui on this listener (glue.console)."
    )
    session_key: SecretRef | None = Field(
        default=None,
        description="Signs the console's session cookies; give the same key to every replica so a session "
        "holds on any of them. Unset: a random key per process (sessions end when it restarts).",
    )
    session_minutes: float = Field(
        default=480.0, gt=0, le=10_080, description="How long a console login lasts (minutes)."
    )

    @model_validator(mode="after")
    def _some_token(self) -> Admin:
        if self.token is None and not self.tokens and self.oidc is None:
            raise ValueError("the admin API needs a token (token: {file|env: ...}), named tokens or oidc")
        if self.token is not None and "admin" in self.tokens:
            raise ValueError("token is named admin: tokens may not have another admin")
        unknown = sorted(set(self.viewers) - set(self.named()))
        if unknown:
            raise ValueError(f"viewers: no token named {', '.join(unknown)}")
        return self

    def named(self) -> dict[str, SecretRef]:
        """Every token by name."""
        found = dict(self.tokens)
        if self.token is not None:
            found["admin"] = self.token
        return found


class Execution(Model):
    """The workers that route journaled events and run handlers (see glue.execution)."""

    enabled: bool = Field(default=True, description="Run workers in this process (false: intake only).")
    concurrency: int = Field(
        default=32, ge=1, le=10_000, description="Invocations in flight at once, all routes."
    )
    lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a claim holds; raised to the longest route timeout + 10 s."
    )
    poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Idle wait before looking for due work."
    )
    batch: int = Field(
        default=100, ge=1, le=10_000, description="Events or invocations claimed per round trip."
    )
    drain_seconds: float = Field(
        default=10.0, ge=0, description="On stop, how long in-flight invocations may finish before release."
    )
    owner: str | None = Field(default=None, description="This replica's name in claims (default host:pid).")
    dry_run: bool = Field(
        default=False, description="Every route only plans (`glue run --dry-run`); no handler acts."
    )
    client_check_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Check each configured client (reachability, login, permissions) at start and this "
        "often; 0: at start only.",
    )


class Settings(BaseSettings):
    """The daemon's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="GLUE_",
        env_nested_delimiter="__",
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    server: Server = Server()
    journal: Journal = Journal()
    logging: Logging = Logging()
    endpoints: list[Endpoint] = []
    record: Path | None = Field(default=None, description="Append every delivery here as a replayable line.")
    # Routes, sources and handler clients are validated by their own layers; see glue.routing.
    routes: list[dict[str, Any]] = []
    execution: Execution = Execution()
    sources: Sources = Sources()
    archive: Archive | None = Field(default=None, description="Needs sources.minio for the connection.")
    admin: Admin | None = Field(default=None, description="The admin API; off unless configured.")
    clients: dict[str, dict[str, Any]] = {}
    plugins: list[str] = Field(default=[], description="Extra handler modules to import.")
    tracing: Tracing = Tracing()

    @model_validator(mode="after")
    def _archive_needs_minio(self) -> Settings:
        if self.archive is not None and self.sources.minio is None:
            raise ValueError("archive needs sources.minio (the connection to its bucket)")
        if self.sources.minio is None:
            for index, route in enumerate(self.routes):
                if route.get("enrich"):
                    raise ValueError(f"routes[{index}].enrich needs sources.minio (to read the objects)")
        return self

    @model_validator(mode="after")
    def _client_certs_need_a_ca(self) -> Settings:
        for endpoint in self.endpoints:
            if endpoint.client_cert is not None and (
                self.server.tls is None or self.server.tls.client_ca_file is None
            ):
                raise ValueError(
                    f"endpoint {endpoint.name!r} has clientCert: it needs server.tls with clientCaFile"
                )
        return self

    @model_validator(mode="after")
    def _unique_endpoints(self) -> Settings:
        for attr in ("name", "path"):
            seen: set[str] = set()
            for endpoint in self.endpoints:
                value = getattr(endpoint, attr)
                if value in seen:
                    raise ValueError(f"two endpoints have the {attr} {value!r}")
                seen.add(value)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is merged into the file's mapping by from_mapping (environment_overrides),
        # key by key under the file's own camelCase names, so both can set one group.
        return (init_settings,)


ENV_PREFIX = "GLUE_"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (``Server``, ``Kafka | None``), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _env_key(model: type[BaseModel] | None, segment: str) -> tuple[str, type[BaseModel] | None] | None:
    """A variable segment (MAX_BACKLOG or MAXBACKLOG) as the model's key (maxBacklog) and nested model.

    Inside free-form mappings (``clients.<name>``) the segment is kept, lower-cased; None when a
    model has no such field."""
    if model is None:
        return segment.lower(), None
    wanted = segment.lower().replace("_", "")
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if wanted in (alias.lower(), name.replace("_", "")):
            return alias, _model_of(field.annotation)
    return None


def environment_overrides(
    environ: typing.Mapping[str, str], known: typing.Collection[str] = ()
) -> dict[str, tuple[str, Any]]:
    """``GLUE_SERVER__MAX_BACKLOG=5`` -> ``{"server.maxBacklog": ("GLUE_SERVER__MAX_BACKLOG", "5")}``.

    A ``GLUE_*`` variable that names no setting is an error (a typo would otherwise be ignored),
    except ``GLUE_CONFIG`` and the variables in ``known`` (those the config names as secrets, such as
    ``GLUE_GITLAB_TOKEN``). A value that looks like a JSON list or object is parsed as one."""
    found: dict[str, tuple[str, Any]] = {}
    unknown: list[str] = []
    for variable, raw in environ.items():
        if not variable.upper().startswith(ENV_PREFIX) or variable in NOT_SETTINGS or variable in known:
            continue
        model: type[BaseModel] | None = Settings
        path: list[str] = []
        for segment in variable[len(ENV_PREFIX) :].split("__"):
            resolved = _env_key(model, segment)
            if resolved is None or not segment:
                path = []
                break
            key, model = resolved
            path.append(key)
        if not path:
            unknown.append(variable)
            continue
        value: Any = raw
        if raw.lstrip().startswith(("[", "{")):
            with contextlib.suppress(ValueError):  # if not JSON, validation says what is wrong with it
                value = json.loads(raw)
        found[".".join(path)] = (variable, value)
    if unknown:
        raise ConfigError("environment", [(name, _no_such_setting(name)) for name in sorted(unknown)])
    return found


#: ``GLUE_*`` variables that are not settings.
NOT_SETTINGS = frozenset({"GLUE_CONFIG"})


def _variables(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """Every variable that sets a field of ``model`` (free-form mappings stop at their own name)."""
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        yield variable
        nested = _model_of(field.annotation)
        if nested is not None:
            yield from _variables(nested, variable + "__")


def _no_such_setting(variable: str) -> str:
    close = difflib.get_close_matches(variable, [*_variables(Settings, ENV_PREFIX), *NOT_SETTINGS], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"names no setting{hint}; unset it, or name it in the config as a secret's env"


def secret_variables(node: Any) -> set[str]:
    """The environment variables a config (a mapping, or loaded settings) names: values of ``env``,
    ``previousEnv`` and any other key ending in ``Env`` (``tokenEnv``, ``secretIdEnv``)."""
    if isinstance(node, BaseModel):
        node = node.model_dump(by_alias=True, exclude_none=True)
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and isinstance(key, str) and (key == "env" or key.endswith("Env")):
                found.add(value)
            else:
                found |= secret_variables(value)
    elif isinstance(node, list):
        for item in node:
            found |= secret_variables(item)
    return found


def _apply(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *parents, last = path.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node.pop(to_snake(last), None)  # the file may spell a key in snake_case too
    node[last] = value


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def from_mapping(
    data: dict[str, Any],
    source: str = "<config>",
    environ: typing.Mapping[str, str] | None = None,
    *,
    secrets: bool = True,
) -> Settings:
    """Validate a config mapping with the environment's ``GLUE_*`` overrides applied on top.

    With ``secrets`` (the daemon, ``glue check``) every secret of the endpoints and sources must be
    readable; without it (commands that only read the journal or the routes) none is read here: each
    is read where it is used."""
    try:
        overrides = environment_overrides(os.environ if environ is None else environ, secret_variables(data))
    except ConfigError as exc:
        raise ConfigError(
            source, [(f"environment {name}", reason) for name, reason in exc.problems]
        ) from None
    data = copy.deepcopy(data)
    for path, (_, value) in overrides.items():
        _apply(data, path, value)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        reasons = []
        for err in exc.errors(include_url=False):
            where = _location(err["loc"])
            origin = next((var for path, (var, _) in overrides.items() if where.startswith(path)), None)
            reasons.append((where + (f" (from {origin})" if origin else ""), err["msg"]))
        raise ConfigError(source, reasons) from None
    if secrets:
        _check_secrets(settings, source)
    return settings


def _check_secrets(settings: Settings, source: str) -> None:
    """Every secret the daemon's endpoints and sources read at start is readable, or ConfigError."""
    problems: list[tuple[str, str]] = []
    for index, endpoint in enumerate(settings.endpoints):
        if endpoint.auth.secret is not None:
            try:
                endpoint.auth.secret.resolve()
            except ValueError as exc:
                problems.append((f"endpoints[{index}].auth.secret", str(exc)))
    if settings.sources.kafka is not None:
        for where, ref in settings.sources.kafka.secrets():
            try:
                ref.resolve()
            except ValueError as exc:
                problems.append((f"sources.kafka.{where}", str(exc)))
    argo_events = settings.sources.argo_events
    if argo_events is not None and argo_events.auth is not None:
        try:
            argo_events.auth.credentials()
        except ValueError as exc:
            problems.append(("sources.argoEvents.auth.file", str(exc)))
    minio = settings.sources.minio
    if minio is not None:
        for name in ("access_key", "secret_key", "session_token"):
            ref = getattr(minio, name)
            if ref is not None:
                try:
                    ref.resolve()
                except ValueError as exc:
                    problems.append((f"sources.minio.{to_camel(name)}", str(exc)))
    if settings.admin is not None:
        for name, ref in settings.admin.named().items():
            try:
                ref.resolve()
            except ValueError as exc:
                where = (
                    "admin.token"
                    if name == "admin" and settings.admin.token is not None
                    else f"admin.tokens.{name}"
                )
                problems.append((where, str(exc)))
        oidc = settings.admin.oidc
        if oidc is not None and oidc.client_secret is not None:
            try:
                oidc.client_secret.resolve()
            except ValueError as exc:
                problems.append(("admin.oidc.clientSecret", str(exc)))
        if oidc is not None and oidc.ca_file is not None and not os.access(oidc.ca_file, os.R_OK):
            problems.append(("admin.oidc.caFile", f"cannot read {oidc.ca_file}"))
    if problems:
        raise ConfigError(source, problems)


def load(path: str | Path | None, *, secrets: bool = True) -> Settings:
    """Read the YAML file (if any), apply the environment, validate. Raises ConfigError.

    ``secrets``: also check that every secret the daemon reads at start is readable."""
    if path is None:
        return from_mapping({}, "<defaults>", secrets=secrets)
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if data is None:
        raise ConfigError(source, [("", "the file is empty (no settings); write {} for the defaults")])
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the top level must be a mapping")])
    return from_mapping(data, source, secrets=secrets)
