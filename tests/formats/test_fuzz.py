"""Whatever arrives, a decoder answers with events the journal can store or with DecodeError (400/415)
and a short reason; never another exception (the intake would turn it into a 500 and a stack trace).

Inputs: arbitrary bytes and headers, valid payloads of every format with fields replaced by arbitrary
JSON (huge integers, NaN, deep nesting, long strings) or removed, truncated and re-encoded bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glue import events, formats
from tests.formats import payloads as p

FUZZ = settings(
    max_examples=150,
    deadline=None,  # the machine is shared; a slow example is not a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FORMATS = ["harbor", "gitlab", "minio", "argo", "cloudevents"]
TRANSPORTS = ["http", "kafka", "minio-listen", "replay"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "APPLICATION/CLOUDEVENTS+JSON; charset=UTF-8",
    "application/cloudevents+avro",
    "text/event-stream",
    "text/plain",
    "application/xml",
    "application/octet-stream",
    ";",
    "",
]
OPTIONS = [
    formats.Options(),
    formats.Options(type="org.example.t", source="s", id_header="x-id"),
    formats.Options(type="org.example.t", source="s", id_field=("event", "id"), dedup_window=0),
]

# Valid deliveries of every format: the seeds the mutations start from.
SEEDS: list[tuple[str, Any, dict[str, str], str]] = [
    ("harbor", p.harbor_default(), p.HARBOR_JSON, "http"),
    ("harbor", p.harbor_default("QUOTA_WARNING", operator=""), p.HARBOR_JSON, "http"),
    ("harbor", p.harbor_ce(), p.HARBOR_CE_JSON, "http"),
    ("gitlab", p.gitlab_push(), p.gitlab_headers(), "http"),
    ("gitlab", p.gitlab_merge_request(), p.gitlab_headers("Merge Request Hook"), "http"),
    ("gitlab", p.gitlab_job(), p.gitlab_headers("Job Hook", idempotency_key=None), "http"),
    ("gitlab", p.gitlab_system_repository_update(), p.gitlab_headers("System Hook"), "http"),
    ("minio", p.minio_envelope(p.minio_record("Tile_+002 x")), {"content-type": "application/json"}, "http"),
    ("minio", p.minio_envelope(p.minio_record()), {}, "kafka"),
    ("minio", {"Records": [p.minio_record("a b", escaped=False)]}, {}, "minio-listen"),
    ("argo", {"model": "llama", "replicas": "2"}, {"x-id": "abc"}, "http"),
    ("argo", p.argo_context() | {"data": {"a": 1}}, {}, "http"),
    ("cloudevents", p.ce_structured(), {"content-type": "application/cloudevents+json"}, "http"),
    (
        "cloudevents",
        [p.ce_structured(), p.ce_structured(event_id="2")],
        {"content-type": "application/cloudevents-batch+json"},
        "http",
    ),
    ("cloudevents", {"model": "llama"}, p.ce_binary_headers(), "http"),
    ("cloudevents", p.ce_structured(), {"content-type": "application/cloudevents+json"}, "kafka"),
]

_text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "s3:ObjectCreated:Put", "PUSH_ARTIFACT", "1.0", "2025-11-28T00:00:00Z", "\u0000", "%ff%", "+%2B+"]
)
_times = st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()) | st.sampled_from(
    ["2025-11-28T00:00:00+01:00:30", "2025-W48-5T00:00:00Z", "2025-11-28T24:00:00Z", "2025-11-28", "1e9"]
)
_text = _text | _times
_numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | _numbers | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def check(delivery: events.Delivery, options: formats.Options = OPTIONS[0]) -> None:
    """The decoder's contract: events the journal can store, or DecodeError with a short reason."""
    try:
        decoded = formats.decode(delivery, options)
    except formats.DecodeError as exc:
        assert exc.status in (400, 415)
        assert isinstance(exc.reason, str)
        assert 0 < len(exc.reason) <= 600
        return
    if not decoded:  # only an empty CloudEvents batch carries no event (json-format.md 4.3)
        assert delivery.headers.get("content-type") == "application/cloudevents-batch+json"
        assert orjson.loads(delivery.body) == []
    for event in decoded:
        assert isinstance(event, events.CloudEvent)
        stored = events.from_json(events.to_json(event))
        assert events.identity(stored) == events.identity(event)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate(value: Any, where: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not where:
        return new
    head, rest = where[0], where[1:]
    container = dict(value) if isinstance(value, dict) else list(value)
    if delete and not rest:
        del container[head]
    else:
        container[head] = _mutate(container[head], rest, new, delete)
    return container


@FUZZ
@given(
    fmt=st.sampled_from(FORMATS),
    transport=st.sampled_from(TRANSPORTS),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=st.binary(max_size=512),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-specversion",
                "ce-time",
                "ce-Bad",
                "ce-",
                "ce_id",
                "ce_time",
                "ce_specversion",
                "idempotency-key",
                "x-gitlab-event",
                "x-id",
            ]
        ),
        _text,
        max_size=5,
    ),
    key=st.none() | st.binary(max_size=8),
    options=st.sampled_from(OPTIONS),
)
def test_arbitrary_bytes_and_headers(
    fmt: str,
    transport: str,
    content_type: str | None,
    body: bytes,
    extra: dict[str, str],
    key: bytes | None,
    options: formats.Options,
) -> None:
    headers = dict(extra)
    if content_type is not None:
        headers["content-type"] = content_type
    check(p.delivery(fmt, body, headers, transport=transport, key=key), options)


@FUZZ
@given(seed=st.sampled_from(SEEDS), data=st.data(), options=st.sampled_from(OPTIONS))
def test_mutated_valid_payloads(
    seed: tuple[str, Any, dict[str, str], str], data: st.DataObject, options: formats.Options
) -> None:
    fmt, payload, headers, transport = seed
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        where = data.draw(st.sampled_from(_paths(payload)), label="path")
        delete = bool(where) and data.draw(st.booleans(), label="delete")
        payload = _mutate(payload, where, None if delete else data.draw(JSON_VALUES, label="value"), delete)
    # The stdlib writes what orjson would refuse: NaN, Infinity, integers beyond 64 bits.
    raw = json.dumps(payload, allow_nan=True).encode("utf-8", "surrogatepass")
    check(p.delivery(fmt, raw, headers, transport=transport), options)


_REENCODE: list[Callable[[bytes], bytes]] = [
    lambda raw: raw.decode().encode("utf-16"),
    lambda raw: raw.decode().encode("utf-32-le"),
    lambda raw: b"\xef\xbb\xbf" + raw,
    lambda raw: raw.decode().encode("latin-1", "replace"),
    lambda raw: raw.replace(b'"', b"'"),
    lambda raw: raw.replace(b":", b"\\ud800:", 1),
]


@FUZZ
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_truncated_corrupted_and_re_encoded_bodies(
    seed: tuple[str, Any, dict[str, str], str], data: st.DataObject
) -> None:
    fmt, payload, headers, transport = seed
    raw = p.body(payload)
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "reencode"]), label="how")
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="at")]
    elif how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255), label="bits")]) + raw[at + 1 :]
    elif how == "insert":
        at = data.draw(st.integers(0, len(raw)), label="at")
        raw = raw[:at] + data.draw(st.binary(min_size=1, max_size=8), label="bytes") + raw[at:]
    else:
        raw = data.draw(st.sampled_from(_REENCODE), label="encoding")(raw)
    check(p.delivery(fmt, raw, headers, transport=transport))


def _extremes() -> list[bytes]:
    huge = "x" * 2_000_000
    return [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 1023 + b"1" + b"}" * 1023,
        b'{"a":' * 1025 + b"1" + b"}" * 1025,
        b"1" + b"0" * 5000,
        b'{"occur_at": 1' + b"0" * 400 + b', "type": "PUSH_ARTIFACT"}',
        b'{"type": "PUSH_ARTIFACT", "occur_at": NaN}',
        b'{"type": "PUSH_ARTIFACT", "occur_at": -Infinity}',
        json.dumps({"type": huge, "object_kind": huge, "Records": [{"eventName": huge}]}).encode(),
        json.dumps(p.ce_structured(**{huge[:5000]: "v"})).encode(),
        json.dumps(p.ce_structured(time=huge)).encode(),
        json.dumps([p.ce_structured(event_id=str(n)) for n in range(2000)]).encode(),
        b"\x00" * 1000,
        b"\xff\xfe" + "{}".encode("utf-16-le"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_extreme_inputs(fmt: str) -> None:
    for raw in _extremes():
        for content_type in (
            None,
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        ):
            headers: dict[str, str] = {} if content_type is None else {"content-type": content_type}
            check(p.delivery(fmt, raw, headers), OPTIONS[1])
            check(
                p.delivery(fmt, raw, headers | p.ce_binary_headers(**{"ce-time": "x" * 100_000})), OPTIONS[1]
            )


@FUZZ
@given(time=_times | _text)
def test_timestamps_in_every_place_they_are_read(time: str) -> None:
    structured = p.ce_structured(time=time)
    check(p.delivery("cloudevents", structured, {"content-type": "application/cloudevents+json"}))
    check(p.delivery("cloudevents", {}, p.ce_binary_headers(**{"ce-time": time})))
    kafka = {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "s", "ce_type": "t", "ce_time": time}
    check(p.delivery("cloudevents", {}, kafka, transport="kafka"))
    record = p.minio_record()
    record["eventTime"] = time
    check(p.delivery("minio", p.minio_envelope(record), {}))
