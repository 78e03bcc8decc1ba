"""Argo Events' EventBus messages (glue.formats.argo_eventbus): the CloudEvent as sent, and the
deliveries it wraps decoded by glue's own decoders, so their events are those of a direct webhook.

Messages are built as argo-events writes them (tests/sources/argo_events/bus.py names the files)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from glue import events, formats
from glue.formats import argo_eventbus
from tests.formats import payloads
from tests.formats.test_fuzz import FUZZ, check
from tests.sources.argo_events import bus
from tests.support import json_data

TOKEN = "glpat-s3cr3t-token-value"


def on_bus(msg: bus.Message) -> events.Delivery:
    return events.Delivery(
        transport="jetstream",
        endpoint="argo-events",
        format="argo-eventbus",
        headers={"nats-subject": msg.subject},
        body=argo_eventbus.scrub(msg.payload),
        received_at=1_764_288_000.0,
    )


def decode(msg: bus.Message, unwrap: str | None = None) -> list[events.CloudEvent]:
    delivery = on_bus(msg)
    delivery = events.Delivery(**{**_fields(delivery), "format": argo_eventbus.decoder_name(unwrap)})
    return formats.decode(delivery)


def _fields(delivery: events.Delivery) -> dict[str, Any]:
    return {
        "transport": delivery.transport,
        "endpoint": delivery.endpoint,
        "format": delivery.format,
        "headers": delivery.headers,
        "body": delivery.body,
        "received_at": delivery.received_at,
    }


def dedup_key(event: events.CloudEvent) -> str:
    return event.key if isinstance(event, events.Digested) else events.identity(event)


def same_event(a: events.CloudEvent, b: events.CloudEvent, *, as_sent: str | None = None) -> None:
    """The same event for rules and dedup: identity (for a payload digest, the key the journal
    deduplicates on within its window), type, subject, data (but for ``as_sent``, the field of the data
    that keeps the producer's record as that path sent it)."""
    assert dedup_key(a) == dedup_key(b)
    assert a.get_type() == b.get_type()
    assert a.get_subject() == b.get_subject()
    data_a, data_b = dict(json_data(a)), dict(json_data(b))
    if as_sent is not None:
        data_a.pop(as_sent), data_b.pop(as_sent)
    assert data_a == data_b


def gitlab_request() -> dict[str, str]:
    return payloads.gitlab_headers(idempotency_key=None) | {"x-gitlab-token": TOKEN}


def test_the_bus_event_keeps_its_attributes_and_its_data_is_json() -> None:
    data = bus.webhook_data({"content-type": "application/json"}, {"model": "llama", "note": "<a&b>"})
    msg = bus.message("hooks", "models", "webhook", data, event_id="5ced26bfb7034b2d819eeea8d928342c")
    [event] = decode(msg)
    assert event.get_id() == "5ced26bfb7034b2d819eeea8d928342c"
    assert event.get_source() == "hooks"
    assert event.get_subject() == "models"
    assert event.get_type() == "webhook"
    when = event.get_time()
    assert when is not None and when.isoformat() == "2026-07-18T12:00:00.123456+00:00"
    assert event.get_data() == {"header": {"Content-Type": ["application/json"]}, "body": data["body"]}


def test_credentials_in_the_header_map_are_removed_from_the_message_and_the_event() -> None:
    headers = gitlab_request() | {"authorization": "Bearer abc.def", "cookie": "session=1"}
    msg = bus.message(
        "gitlab-hooks", "push", "gitlab", bus.webhook_data(headers, payloads.gitlab_push(), plural=True)
    )
    assert TOKEN.encode() in __import__("base64").b64decode(orjson.loads(msg.payload)["data_base64"])
    scrubbed = argo_eventbus.scrub(msg.payload)
    for delivery_body in (scrubbed,):
        text = __import__("base64").b64decode(orjson.loads(delivery_body)["data_base64"])
        assert TOKEN.encode() not in text and b"abc.def" not in text and b"session=1" not in text
        assert b"X-Gitlab-Event" in text  # the other headers stay
    [event] = decode(msg)
    dumped = events.to_json(event)
    assert TOKEN.encode() not in dumped and b"abc.def" not in dumped
    [unwrapped] = decode(msg, "gitlab")
    assert TOKEN.encode() not in events.to_json(unwrapped)


@pytest.mark.parametrize(
    "name",
    ['"AUTHORIZATION"', '"x-gitlab-token"', '"x\\u002Dgitlab-token"', '"\\u0061uthorization"'],
    ids=["upper-case", "lower-case", "escaped-dash", "escaped-letter"],
)
@pytest.mark.parametrize("encoded", [True, False], ids=["data_base64", "data"])
def test_a_credential_header_however_its_name_is_written_is_removed(name: str, encoded: bool) -> None:
    data = f'{{"header": {{{name}: ["{TOKEN}"], "X-Request-Id": ["1"]}}, "body": {{"a": 1}}}}'.encode()
    message = {"specversion": "1.0", "id": "1", "source": "hooks", "type": "webhook", "subject": "e"}
    if encoded:
        message["data_base64"] = __import__("base64").b64encode(data).decode()
    else:
        message["data"] = orjson.loads(data)
    scrubbed = argo_eventbus.scrub(orjson.dumps(message))
    sent = orjson.loads(scrubbed)
    kept = orjson.loads(__import__("base64").b64decode(sent["data_base64"])) if encoded else sent["data"]
    assert kept == {"header": {"X-Request-Id": ["1"]}, "body": {"a": 1}}


@pytest.mark.parametrize("unwrap", [None, "gitlab"])
def test_the_decoder_alone_keeps_no_credential_of_an_unscrubbed_message(unwrap: str | None) -> None:
    """As ``glue decode`` reads a message saved from the bus, never scrubbed."""
    headers = gitlab_request() | {"authorization": "Bearer abc.def"}
    msg = bus.message(
        "gitlab-hooks", "push", "gitlab", bus.webhook_data(headers, payloads.gitlab_push(), plural=True)
    )
    delivery = events.Delivery(
        transport="jetstream",
        endpoint="argo-events",
        format=argo_eventbus.decoder_name(unwrap),
        headers={},
        body=msg.payload,
    )
    [event] = formats.decode(delivery)
    dumped = events.to_json(event)
    assert TOKEN.encode() not in dumped and b"abc.def" not in dumped


def test_a_message_without_credentials_is_kept_byte_for_byte() -> None:
    msg = bus.message("hooks", "models", "webhook", bus.webhook_data({"x-request-id": "1"}, {"a": 1}))
    assert argo_eventbus.scrub(msg.payload) is msg.payload


@pytest.mark.parametrize("plural", [True, False], ids=["gitlab-event-source", "webhook-event-source"])
def test_unwrap_gitlab_gives_the_event_of_the_direct_webhook(plural: bool) -> None:
    headers = gitlab_request()
    body = payloads.gitlab_push()
    [direct] = formats.decode(payloads.delivery("gitlab", body, events.scrub_headers(headers)))
    msg = bus.message(
        "gitlab-hooks",
        "push",
        "gitlab" if plural else "webhook",
        bus.webhook_data(headers, body, plural=plural),
    )
    [unwrapped] = decode(msg, "gitlab")
    same_event(unwrapped, direct)
    assert (
        unwrapped.get_id() == "0d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a"
    )  # X-Gitlab-Webhook-UUID, not Argo's id
    assert unwrapped.get_type() == "gitlab.push"
    when = unwrapped.get_time()
    assert when is not None and when.year == 2026  # when Argo received it


@pytest.mark.parametrize("ce", [True, False], ids=["cloudevents-format", "default-format"])
def test_unwrap_harbor_gives_the_event_of_the_direct_webhook(ce: bool) -> None:
    body = payloads.harbor_ce() if ce else payloads.harbor_default()
    headers = payloads.HARBOR_CE_JSON if ce else payloads.HARBOR_JSON
    [direct] = formats.decode(payloads.delivery("harbor", body, headers))
    msg = bus.message(
        "harbor", "artifacts", "webhook", bus.webhook_data(headers | {"authorization": "Basic x"}, body)
    )
    [unwrapped] = decode(msg, "harbor")
    same_event(unwrapped, direct)
    assert unwrapped.get_type() == "harbor.artifact.pushed"


def test_unwrap_minio_gives_the_events_of_the_webhook_target_and_the_listen_stream() -> None:
    key = "llm/llama 3+/weights 100%.safetensors"
    [webhook] = formats.decode(
        payloads.delivery("minio", payloads.minio_envelope(payloads.minio_record(key)))
    )
    listen_records = [
        payloads.minio_record(key, escaped=False),
        payloads.minio_record("b.txt", escaped=False),
    ]
    msg = bus.message("models", "put", "minio", {"notification": listen_records})
    first, second = decode(msg, "minio")
    same_event(first, webhook, as_sent="record")  # the webhook target's record has the key escaped
    assert second.get_subject() == "b.txt"


def test_unwrap_minio_of_a_webhook_event_source_reads_the_target_body() -> None:
    record = payloads.minio_record("a b.bin")
    [webhook] = formats.decode(payloads.delivery("minio", payloads.minio_envelope(record)))
    msg = bus.message(
        "hooks", "minio", "webhook", bus.webhook_data(payloads.HARBOR_JSON, payloads.minio_envelope(record))
    )
    [unwrapped] = decode(msg, "minio")
    same_event(unwrapped, webhook)


@pytest.mark.parametrize(
    ("payload", "unwrap", "reason"),
    [
        (b"not json", None, "message is not valid JSON"),
        (b'["a"]', None, "not a CloudEvent"),
        (
            b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "%%%"}',
            None,
            "not valid base64",
        ),
        (
            orjson.dumps(
                {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "bm90IGpzb24="}
            ),
            None,
            "'data_base64' is not valid JSON",
        ),
        (b'{"specversion": "1.0", "source": "s", "type": "t"}', None, "missing required attribute 'id'"),
        (
            bus.message("es", "ev", "webhook", {"no": "body"}).payload,
            "gitlab",
            "unwrap gitlab: the event data has no 'body'",
        ),
        (
            bus.message("es", "ev", "webhook", [1]).payload,
            "harbor",
            "unwrap harbor: the event data must be an object",
        ),
        (
            bus.message("es", "ev", "minio", {"notification": [{}]}).payload,
            "minio",
            "unwrap minio: record 0: missing",
        ),
        (
            bus.message("es", "ev", "gitlab", bus.webhook_data({}, {"no": "kind"}, plural=True)).payload,
            "gitlab",
            "unwrap gitlab: cannot tell the GitLab event kind",
        ),
    ],
)
def test_poison_messages_say_what_is_wrong(payload: bytes, unwrap: str | None, reason: str) -> None:
    with pytest.raises(formats.DecodeError) as caught:
        decode(bus.Message("default.es.ev", "1", payload), unwrap)
    assert reason in caught.value.reason


def test_selector_first_entry_that_matches_applies() -> None:
    selector = argo_eventbus.Selector(
        [("gitlab-hooks.push", "gitlab"), ("gitlab-hooks", None), ("models", "minio")]
    )
    assert selector.select("gitlab-hooks", "push") == argo_eventbus.Selection(
        "gitlab-hooks.push", "argo-eventbus+gitlab"
    )
    assert selector.select("gitlab-hooks", "tag") == argo_eventbus.Selection("gitlab-hooks", "argo-eventbus")
    assert selector.select("calendar", "tick") is None
    assert selector.subjects() == ["default.gitlab-hooks.*", "default.models.*"]
    assert argo_eventbus.Selector([("a.b", None), ("*", "minio")]).subjects() == ["default.*.*"]
    assert argo_eventbus.Selector([("a.b", None), ("c.d", None)]).subjects() == ["default.a.b", "default.c.d"]


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_wrapped_data = st.fixed_dictionaries(
    {},
    optional={
        "header": st.dictionaries(
            st.sampled_from(["Content-Type", "X-Gitlab-Event", "X-Gitlab-Token"]), _json
        ),
        "headers": _json,
        "body": _json,
        "notification": _json,
    },
)


@FUZZ
@given(data=_json | _wrapped_data, unwrap=st.sampled_from([None, *argo_eventbus.UNWRAPS]))
def test_any_wrapped_data_decodes_or_is_refused_with_a_reason(data: Any, unwrap: str | None) -> None:
    msg = bus.message("es", "ev", "webhook", data)
    delivery = on_bus(msg)
    check(events.Delivery(**{**_fields(delivery), "format": argo_eventbus.decoder_name(unwrap)}))


@FUZZ
@given(
    body=st.binary(max_size=200) | _json.map(orjson.dumps),
    unwrap=st.sampled_from([None, *argo_eventbus.UNWRAPS]),
)
def test_any_message_is_scrubbed_and_decoded_or_refused(body: bytes, unwrap: str | None) -> None:
    scrubbed = argo_eventbus.scrub(body)
    format_ = argo_eventbus.decoder_name(unwrap)
    check(
        events.Delivery(
            transport="jetstream", endpoint="argo-events", format=format_, headers={}, body=scrubbed
        )
    )
