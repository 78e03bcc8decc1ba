"""CloudEvents 1.0 conformance of the webhook intake, written from the spec's sentences, over a real
socket to the real daemon: what a sender is answered and what the journal holds.

Texts: cloudevents/spec v1.0.2 and the current text (1.0.3-wip) where it adds a rule: spec.md,
bindings/http-protocol-binding.md ("HTTP"), formats/json-format.md ("JSON"). Every rule that binds a
receiver is tested in each HTTP mode it applies to (binary, structured, batch); the Kafka binding is
in test_conformance_kafka.py.

MUSTs that bind a producer, an intermediary or a spec author, not a receiver:
- spec Type System: "MUST be settable providing an RFC3339 string" binds a programming model (the SDK).
- spec id/source: "Producers MUST ensure that source + id is unique" (a receiver may take equal pairs
  as duplicates: tested as the journal's dedup).
- spec specversion: "producers MUST use a value of 1.0" (a receiver refuses another value: tested).
- spec Size Limits: "Intermediaries MUST forward events of 64 KiB or less": glue consumes, it does not
  forward (the consumer's SHOULD to take 64 KiB is tested).
- spec and JSON 2.2: "Extension specifications MUST ..." binds extension authors.
- HTTP 3: "The batched mode MUST NOT be used unless solicited" binds a sender.
- HTTP 3.1.3: extensions with a secondary mapping "MUST also still appear" as ce- headers (sender).
- HTTP 3.1.3.2: "string values ... MUST be percent-encoded" and the characters that MUST be encoded
  bind the encoder; the decoder's MUSTs are tested.
- HTTP 3.2.3: "All CloudEvents metadata attributes MUST be mapped into the payload" binds a sender
  (the receiver reads the payload, not the headers: tested).
- JSON 3.1.1: a serializer's MUSTs (data_base64 for Binary, JSON data stored as a JSON value) bind a
  writer; the journal row is one, and the tests below read it.
- current spec: "Each Event Format MUST define a structured-mode representation" binds format authors.

Not enforced over HTTP (a known gap, see the README): current spec "Each context attribute MUST only
appear at most once": a JSON object that repeats a member keeps the last (as orjson and most parsers
read it), and a repeated HTTP header keeps the last. Kafka enforces it for headers (tested there).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from tests.formats.conftest import Glue

ENDPOINT = "/events"
STRUCTURED = {"content-type": "application/cloudevents+json; charset=utf-8"}
BATCH = {"content-type": "application/cloudevents-batch+json; charset=utf-8"}
MODES = ["binary", "structured", "batch"]
JSON_MODES = ["structured", "batch"]

# The characters HTTP 3.1.3.2 says an encoder MUST percent-encode: space, '"', '%', and everything
# outside printable ASCII.
_PLAIN = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "%"}


def percent_encode(value: str) -> str:
    """HTTP 3.1.3.2, encoding a header value (upper-case hex, as it SHOULD be)."""
    return "".join(c if c in _PLAIN else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in value)


def event(**changes: Any) -> dict[str, Any]:
    """A valid event in the JSON format; ``name=...`` removes an attribute."""
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": "A234-1234-1234",
        "source": "https://github.com/cloudevents/spec/pull",
        "type": "com.github.pull_request.opened",
        "time": "2018-04-05T17:31:00Z",
        "datacontenttype": "application/json",
        "data": {"number": 123},
    }
    for name, value in changes.items():
        if value is ...:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def binary(document: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The event in HTTP binary mode: ce- headers (percent-encoded), Content-Type, data as the body."""
    headers = {}
    for name, value in document.items():
        if name in ("data", "data_base64"):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if name == "datacontenttype":
            headers["content-type"] = text
        else:
            headers[f"ce-{name}"] = percent_encode(text)
    if "data_base64" in document:
        body = base64.b64decode(document["data_base64"])
    elif "data" in document:
        data = document["data"]
        body = (
            data.encode() if isinstance(data, str) and "datacontenttype" in document else orjson.dumps(data)
        )
    else:
        body = b""
    return body, headers


async def send(glue: Glue, mode: str, document: dict[str, Any]) -> tuple[int, Any]:
    if mode == "binary":
        body, headers = binary(document)
        return await glue.post(ENDPOINT, body, headers)
    if mode == "structured":
        return await glue.post(ENDPOINT, orjson.dumps(document), STRUCTURED)
    return await glue.post(ENDPOINT, orjson.dumps([document]), BATCH)


async def stored(glue: Glue) -> list[dict[str, Any]]:
    """The journaled events as ``glue events show`` prints them: the structured JSON document."""
    return [orjson.loads(row.cloudevent) for row in await glue.journaled()]


async def accepted(glue: Glue, mode: str, document: dict[str, Any]) -> dict[str, Any]:
    """Send one event, expect 202 with its id, and return the journaled document."""
    before = len(await glue.journaled())
    status, answer = await send(glue, mode, document)
    assert (status, answer) == (202, {"ids": [document["id"]]}), answer
    rows = await stored(glue)
    assert len(rows) == before + 1
    return rows[-1]


async def refused(glue: Glue, mode: str, document: dict[str, Any], *reason: str) -> str:
    """Send one event, expect 400 whose reason holds every ``reason`` part, and nothing journaled."""
    before = len(await glue.journaled())
    status, answer = await send(glue, mode, document)
    assert status == 400, answer
    for part in reason:
        assert part in answer["error"], answer["error"]
    if mode == "batch":
        assert answer["error"].startswith("event 0: ")
    assert len(await glue.journaled()) == before
    return str(answer["error"])


# -- spec.md: Context Attributes, REQUIRED Attributes ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_event_with_the_required_attributes_is_journaled_as_sent(glue: Glue, mode: str) -> None:
    """spec "Context Attributes": an event MUST include the REQUIRED attributes; these suffice."""
    sent = event(time=..., datacontenttype=..., data=...)
    row = await accepted(glue, mode, sent)
    assert {k: row[k] for k in ("specversion", "id", "source", "type")} == {k: sent[k] for k in sent}


@pytest.mark.parametrize("mode", MODES)
async def test_an_event_missing_a_required_attribute_is_refused_naming_it(glue: Glue, mode: str) -> None:
    """spec "REQUIRED Attributes": id, source, specversion and type are REQUIRED."""
    for name in ("id", "source", "specversion", "type"):
        await refused(glue, mode, event(**{name: ...}), f"missing required attribute '{name}'")


@pytest.mark.parametrize("mode", MODES)
async def test_required_strings_must_not_be_empty(glue: Glue, mode: str) -> None:
    """spec id, source, type: "MUST be a non-empty string" (source: a non-empty URI-reference)."""
    for name in ("id", "source", "type"):
        await refused(glue, mode, event(**{name: ""}), f"attribute '{name}'")


@pytest.mark.parametrize("mode", MODES)
async def test_another_specversion_is_refused(glue: Glue, mode: str) -> None:
    """spec specversion: producers MUST use 1.0 for this version; a receiver of 1.0 refuses others.
    HTTP 3.3.2 (v1.0.2) and current spec: all batched events MUST have the same specversion."""
    for version in ("0.3", "1.1", "1"):
        await refused(glue, mode, event(specversion=version), f"specversion '{version}' is not supported")


async def test_a_batch_mixing_specversions_is_refused_whole(glue: Glue) -> None:
    """HTTP 3.3.2 (v1.0.2): "All batched CloudEvents MUST have the same specversion attribute"."""
    batch = [event(id="one"), event(id="two", specversion="0.3")]
    status, answer = await glue.post(ENDPOINT, orjson.dumps(batch), BATCH)
    assert status == 400
    assert answer["error"].startswith("event 1: specversion '0.3' is not supported")
    assert await glue.journaled() == []


@pytest.mark.parametrize("mode", MODES)
async def test_source_must_be_a_uri_reference(glue: Glue, mode: str) -> None:
    """spec source: "MUST be a non-empty URI-reference" (RFC 3986 section 4.1)."""
    for good in (
        "/mycontext",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "mailto:cncf-wg@lists.cncf.io",
    ):
        row = await accepted(glue, mode, event(id=good, source=good))
        assert row["source"] == good
    for bad in ("my context", "http://example.com/a b", "1st:thing", "/x#a#b", "/%zz"):
        await refused(glue, mode, event(source=bad), "attribute 'source'", "URI-reference")


# -- spec.md: OPTIONAL Attributes ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_datacontenttype_must_be_an_rfc2046_media_type(glue: Glue, mode: str) -> None:
    """spec datacontenttype: "If present, MUST adhere to the format specified in RFC 2046"; in binary
    mode it is the Content-Type header (HTTP 3.1.1)."""
    for bad in ("xyz", "application/", "text/plain; charset", "a/b/c"):
        await refused(glue, mode, event(datacontenttype=bad, data="x"), "'datacontenttype'", "RFC 2046")
    good = 'text/plain; charset="utf-8"; format=flowed'
    assert (await accepted(glue, mode, event(datacontenttype=good, data="x")))["datacontenttype"] == good


@pytest.mark.parametrize("mode", MODES)
async def test_dataschema_must_be_a_non_empty_absolute_uri(glue: Glue, mode: str) -> None:
    """spec dataschema: "If present, MUST be a non-empty URI" (type URI: RFC 3986 section 4.3)."""
    for bad in ("", "/schemas/pull.json", "schemas/pull.json", "https://example.com/a b"):
        await refused(glue, mode, event(dataschema=bad), "attribute 'dataschema'")
    good = "https://example.com/schemas/pull-v1.json"
    assert (await accepted(glue, mode, event(dataschema=good)))["dataschema"] == good


@pytest.mark.parametrize("mode", MODES)
async def test_subject_if_present_must_not_be_empty(glue: Glue, mode: str) -> None:
    """spec subject: "If present, MUST be a non-empty string"."""
    await refused(glue, mode, event(subject=""), "attribute 'subject'")
    assert (await accepted(glue, mode, event(subject="123")))["subject"] == "123"


@pytest.mark.parametrize("mode", MODES)
async def test_time_must_be_rfc3339_and_stays_convertible_to_it(glue: Glue, mode: str) -> None:
    """spec time: "If present, MUST adhere to the format specified in RFC 3339"; spec Type System:
    a Timestamp MUST be convertible to an RFC 3339 string (the journal keeps the instant and offset)."""
    for bad in ("2018-04-05", "05/04/2018 17:31", "2018-04-05T17:31:00", "2018-W14-4T17:31:00Z"):
        await refused(glue, mode, event(time=bad), "time")
    row = await accepted(glue, mode, event(time="2018-04-05T19:31:00.25+02:00"))
    assert row["time"] == "2018-04-05T19:31:00.250000+02:00"


@pytest.mark.parametrize("mode", MODES)
async def test_an_event_without_time_is_dated_at_its_arrival(glue: Glue, mode: str) -> None:
    """Deliberate addition (README): time is OPTIONAL; glue stamps an undated event with the time it
    arrived, in RFC 3339, and keeps every attribute sent."""
    row = await accepted(glue, mode, event(time=...))
    assert row["time"].endswith("Z")
    assert row["time"][:4].isdigit() and row["time"][10] == "T"


# -- spec.md: Naming Conventions, Type System, Extension Context Attributes --------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_attribute_names_are_lower_case_letters_and_digits(glue: Glue, mode: str) -> None:
    """spec Naming Conventions: names "MUST consist of lower-case letters [a-z] or digits [0-9]" and
    (current text) "MUST be at least one character in length"; extensions follow the same convention.
    In binary mode the header name is the attribute name, and header names ignore case."""
    bad_names = ["com_example", "com-example", ""] + (
        [] if mode == "binary" else ["ComExample", "comexampleé"]
    )
    for name in bad_names:
        await refused(glue, mode, event(**{name: "v"}), f"extension attribute '{name}' is not a valid name")
    row = await accepted(glue, mode, event(comexample2="v"))
    assert row["comexample2"] == "v"


async def test_the_name_data_is_reserved_in_binary_mode(glue: Glue) -> None:
    """current spec Naming Conventions: an attribute "MUST NOT use the name data"."""
    body, headers = binary(event())
    status, answer = await glue.post(ENDPOINT, body, {**headers, "ce-data": "x"})
    assert (status, answer) == (
        400,
        {"error": "invalid CloudEvent: the attribute name 'data' is reserved (spec 1.0: naming conventions)"},
    )


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_extension_values_are_of_the_type_system(glue: Glue, mode: str) -> None:
    """spec Type System: "All context attribute values MUST be of one of the types listed"; Integer is
    signed 32 bits; JSON 2.2: an Integer is a JSON number with "only the integer component"."""
    accepted_values: tuple[int | str, ...] = (2**31 - 1, -(2**31), True, "5")
    for value in accepted_values:
        row = await accepted(glue, mode, event(id=f"ok-{value}", comexampleothervalue=value))
        assert row["comexampleothervalue"] == value
    for number in (1.5, 5.0, 1e3):
        await refused(glue, mode, event(comexampleothervalue=number), "'comexampleothervalue'", "no fraction")
    for value in (2**31, -(2**31) - 1, 2**40):
        await refused(
            glue, mode, event(comexampleothervalue=value), "'comexampleothervalue'", "signed 32 bits"
        )
    for nested in ({"a": 1}, [1]):
        await refused(
            glue, mode, event(comexampleothervalue=nested), "'comexampleothervalue' must be a string"
        )


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_core_attributes_are_of_their_declared_types(glue: Glue, mode: str) -> None:
    """spec: id, source, type, subject, datacontenttype, dataschema are Strings/URIs, not numbers."""
    for name in ("id", "source", "type", "subject", "datacontenttype", "dataschema"):
        await refused(glue, mode, event(**{name: 17}), f"'{name}'")


@pytest.mark.parametrize("mode", MODES)
async def test_strings_hold_only_allowed_characters(glue: Glue, mode: str) -> None:
    """spec Type System, String: control characters (U+0000-U+001F, U+007F-U+009F), noncharacters and
    unpaired surrogates are disallowed; a properly paired surrogate (an emoji) is a character."""
    for char in ("\u0000", "\u001f", "\u007f", "\u0085", "\ufdd0", "\U0001fffe"):
        await refused(glue, mode, event(subject=f"a{char}b"), "attribute 'subject' holds U+")
    row = await accepted(glue, mode, event(subject="llama \U0001f600 \u20ac"))
    assert row["subject"] == "llama \U0001f600 \u20ac"


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_an_unpaired_surrogate_is_refused(glue: Glue, mode: str) -> None:
    """spec Type System, String: "\\uDEAD" is invalid, "\\uD800\\uDEAD" legal (JSON notation)."""
    body = orjson.dumps(event(subject="PLACEHOLDER"))
    if mode == "batch":
        body = b"[" + body + b"]"
    headers = STRUCTURED if mode == "structured" else BATCH
    status, answer = await glue.post(ENDPOINT, body.replace(b"PLACEHOLDER", b"\\udead"), headers)
    assert status == 400 and "not valid JSON" in answer["error"]
    status, _ = await glue.post(ENDPOINT, body.replace(b"PLACEHOLDER", b"\\ud800\\udead"), headers)
    assert status == 202
    assert [row["subject"] for row in await stored(glue)] == [chr(0x10000 + 0xDEAD - 0xDC00)]


async def test_equal_source_and_id_is_the_same_event(glue: Glue) -> None:
    """spec id: producers MUST keep source + id unique, so "Consumers MAY assume that Events with
    identical source and id are duplicates": a resend is answered 200 and journaled once."""
    first = await send(glue, "structured", event())
    again = await send(glue, "binary", event())
    assert (first, again) == ((202, {"ids": ["A234-1234-1234"]}), (200, {"ids": ["A234-1234-1234"]}))
    assert len(await glue.journaled()) == 1


async def test_an_event_of_64_kib_is_taken(glue: Glue) -> None:
    """spec Size Limits: consumers SHOULD accept events of at least 64 KiB (a MUST for intermediaries)."""
    sent = event(data={"blob": "x" * (64 * 1024 - 300)})
    assert len(orjson.dumps(sent)) <= 64 * 1024
    for mode in MODES:
        assert (await accepted(glue, mode, {**sent, "id": mode}))["data"] == sent["data"]


# -- HTTP binding 3.1: binary content mode ---------------------------------------------------------


async def test_binary_content_type_is_datacontenttype_and_the_body_is_data(glue: Glue) -> None:
    """HTTP 3.1.1: Content-Type "MUST be populated from or written to" datacontenttype; 3.1.2: the
    body is the data; 3.1.3: every other attribute, extensions included, is its own ce- header."""
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.someevent",
        "ce-time": "2018-04-05T03:56:24Z",
        "ce-id": "1234-1234-1234",
        "ce-source": "/mycontext/subcontext",
        "ce-comexampleextension1": "value",
        "Content-Type": "application/vnd.apache.thrift.binary",
    }
    assert (await glue.post(ENDPOINT, b"\x80\x01\x00\x01\xff", headers))[0] == 202
    [row] = await stored(glue)
    assert row["datacontenttype"] == "application/vnd.apache.thrift.binary"
    assert base64.b64decode(row["data_base64"]) == b"\x80\x01\x00\x01\xff"
    assert row["comexampleextension1"] == "value"


async def test_binary_mode_must_not_carry_ce_datacontenttype(glue: Glue) -> None:
    """HTTP 3.1.1: "a ce-datacontenttype HTTP header MUST NOT also be present in the message"."""
    body, headers = binary(event())
    status, answer = await glue.post(ENDPOINT, body, {**headers, "ce-datacontenttype": "application/json"})
    assert status == 400 and "'ce-datacontenttype' must not be sent" in answer["error"]
    assert await glue.journaled() == []


async def test_binary_without_content_type_keeps_the_bytes_sent(glue: Glue) -> None:
    """JSON 3.1.2 (current text): without datacontenttype "no content type is inferred", and HTTP
    3.1.2: the body is the data: it is kept as bytes, and no datacontenttype is added."""
    _, headers = binary(event(datacontenttype=..., data=...))
    for event_id, body in (("opaque", b"\x00\xff\xfe raw"), ("looks-json", b'{ "xyz": 123 }')):
        status, _ = await glue.post(ENDPOINT, body, {**headers, "ce-id": event_id})
        assert status == 202
    rows = await stored(glue)
    assert [base64.b64decode(row["data_base64"]) for row in rows] == [b"\x00\xff\xfe raw", b'{ "xyz": 123 }']
    assert ["datacontenttype" in row for row in rows] == [False, False]


async def test_binary_header_names_are_case_insensitive(glue: Glue) -> None:
    """HTTP 3.1.3.1: "per the HTTP specification, header names are case-insensitive"."""
    headers = {
        "CE-SpecVersion": "1.0",
        "Ce-Id": "up-1",
        "CE-SOURCE": "/up",
        "ce-Type": "t.up",
        "CE-Ext1": "v",
    }
    assert (await glue.post(ENDPOINT, b"", headers))[0] == 202
    [row] = await stored(glue)
    assert (row["id"], row["source"], row["type"], row["ext1"]) == ("up-1", "/up", "t.up", "v")


async def test_binary_header_values_are_unquoted_then_percent_decoded(glue: Glue) -> None:
    """HTTP 3.1.3.2: a header value "MUST first be unescaped with respect to double-quoted strings
    ... including processing backslash escapes", then "a single round of percent-decoding"; lower-case
    hex MUST be accepted, and so MUST values unnecessarily percent-encoded."""
    _, headers = binary(event(data=...))
    cases = {
        "q1": ('"Hello World"', "Hello World"),
        "q2": (r'"a \"quoted\" word, a back\\slash"', 'a "quoted" word, a back\\slash'),
        "q3": ('"100%25 sure"', "100% sure"),
        "q4": ('prefix "in quotes" suffix', "prefix in quotes suffix"),
        "p1": ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro \u20ac \U0001f600"),
        "p2": ("%e2%82%ac%2fx", "\u20ac/x"),
        "p3": ("%41%42C", "ABC"),
        "p4": ("%2541", "%41"),  # one round only
    }
    for event_id, (sent, _) in cases.items():
        status, answer = await glue.post(ENDPOINT, b"", {**headers, "ce-id": event_id, "ce-subject": sent})
        assert status == 202, answer
    assert {row["id"]: row["subject"] for row in await stored(glue)} == {k: v for k, (_, v) in cases.items()}


async def test_binary_header_with_an_open_quote_is_refused(glue: Glue) -> None:
    """HTTP 3.1.3.2 / RFC 7230 3.2.6: a quoted-string ends with a double quote."""
    _, headers = binary(event(data=...))
    status, answer = await glue.post(ENDPOINT, b"", {**headers, "ce-subject": '"never closed'})
    assert (status, answer) == (
        400,
        {"error": "header 'ce-subject' opens a double-quoted string and does not close it"},
    )


async def test_percent_encoded_bytes_that_are_not_utf8_are_refused(glue: Glue) -> None:
    """HTTP 3.1.3.2: "encoded byte sequences which are invalid in UTF-8 MUST be rejected (For example,
    "%C0%A0" is an overlong encoding of U+0020, and MUST be rejected.)"."""
    _, headers = binary(event(data=...))
    for name, value in (
        ("ce-subject", "%C0%A0"),  # overlong
        ("ce-subject", "caf%E9"),  # Latin-1, not UTF-8
        ("ce-comexampleext", "%E2%82"),  # truncated sequence
        ("ce-source", "/a%ED%A0%80"),  # an encoded surrogate
        ("ce-id", "%F4%90%80%80"),  # beyond U+10FFFF
    ):
        status, answer = await glue.post(ENDPOINT, b"", {**headers, name: value})
        reason = f"header {name!r} (attribute {name[3:]!r}) percent-encodes bytes that are not valid UTF-8"
        assert (status, answer) == (400, {"error": reason})
    assert await glue.journaled() == []


async def test_raw_header_bytes_that_are_not_utf8_are_refused(glue: Glue) -> None:
    """HTTP 3.1.3.2: header values are printable ASCII, anything else percent-encoded, and bytes that
    are not UTF-8 MUST be rejected; a sender that writes raw bytes instead is held to the same rule
    (raw UTF-8 is taken leniently)."""
    assert glue.daemon.pipeline is not None and glue.daemon.pipeline.http.port is not None
    answers = []
    for subject in (b"caf\xe9", b"caf\xc3\xa9"):
        reader, writer = await asyncio.open_connection("127.0.0.1", glue.daemon.pipeline.http.port)
        writer.write(
            b"POST /events HTTP/1.1\r\nHost: glue\r\nConnection: close\r\nContent-Length: 0\r\n"
            b"ce-specversion: 1.0\r\nce-id: raw\r\nce-source: /raw\r\nce-type: t\r\n"
            b"ce-subject: " + subject + b"\r\n\r\n"
        )
        response = await reader.read()
        answers.append((response.partition(b"\r\n")[0], response.partition(b"\r\n\r\n")[2]))
        writer.close()
        await writer.wait_closed()
    assert [status for status, _ in answers] == [b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 202 Accepted"]
    assert orjson.loads(answers[0][1])["error"].startswith("attribute 'subject' holds U+DCE9")
    assert [row["subject"] for row in await stored(glue)] == ["caf\u00e9"]


async def test_percent_decoded_control_characters_are_refused(glue: Glue) -> None:
    """spec Type System, String, after HTTP 3.1.3.2 decoding: "%00" or "%0A" decode to control
    characters, which no String may hold."""
    _, headers = binary(event(data=...))
    for value, code in (("a%00b", "U+0000"), ("a%0Ab", "U+000A"), ("%C2%85", "U+0085")):
        status, answer = await glue.post(ENDPOINT, b"", {**headers, "ce-subject": value})
        assert status == 400 and answer["error"].startswith(f"attribute 'subject' holds {code}")


# -- HTTP binding 3.2 and JSON format: structured content mode --------------------------------------


async def test_structured_and_batch_mode_are_chosen_by_a_case_insensitive_media_type(glue: Glue) -> None:
    """HTTP 3 (current text): the application/cloudevents prefix is "matched case-insensitively", and
    application/cloudevents-batch selects batch mode; JSON 3 and 4.2 name the media types."""
    headers = {"content-type": "Application/CloudEvents+JSON; Charset=UTF-8"}
    assert (await glue.post(ENDPOINT, orjson.dumps(event()), headers))[0] == 202
    headers = {"content-type": "APPLICATION/CLOUDEVENTS-BATCH+JSON"}
    assert await glue.post(ENDPOINT, orjson.dumps([event(id="b")]), headers) == (202, {"ids": ["b"]})
    assert [(row["id"], row["data"]) for row in await stored(glue)] == [
        ("A234-1234-1234", {"number": 123}),
        ("b", {"number": 123}),
    ]


async def test_structured_mode_reads_the_body_not_the_headers(glue: Glue) -> None:
    """HTTP 3.2.3: a structured message MAY carry ce- headers too; all attributes MUST be in the
    payload, which is what the receiver reads."""
    headers = {**STRUCTURED, "ce-id": "from-header", "ce-subject": "from-header"}
    assert await glue.post(ENDPOINT, orjson.dumps(event()), headers) == (202, {"ids": ["A234-1234-1234"]})
    [row] = await stored(glue)
    assert "subject" not in row


async def test_an_unknown_event_format_is_unsupported(glue: Glue) -> None:
    """HTTP 1.4 and 3: application/cloudevents+<format> is structured mode in that format; a receiver
    MUST support JSON and may support others: another format is answered 415."""
    status, answer = await glue.post(ENDPOINT, b"<event/>", {"content-type": "application/cloudevents+xml"})
    assert status == 415 and "'application/cloudevents+xml' is not supported" in answer["error"]


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_null_attributes_are_unset(glue: Glue, mode: str) -> None:
    """JSON 2.2: "When decoding attributes and a null value is encountered, it MUST be treated as the
    equivalent of unset or omitted" (a REQUIRED one is then missing)."""
    row = await accepted(glue, mode, event(subject=None, comexampleextension1=None, time=None))
    assert "subject" not in row and "comexampleextension1" not in row
    await refused(glue, mode, event(source=None), "missing required attribute 'source'")


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_extensions_are_top_level_members(glue: Glue, mode: str) -> None:
    """JSON 2: "Extensions MUST be serialized as a top-level JSON property": a nested object is not an
    attribute value."""
    await refused(glue, mode, event(extensions={"comexample": "v"}), "'extensions' must be a string")


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_json_data_is_a_json_value_and_a_string_is_not_parsed_again(glue: Glue, mode: str) -> None:
    """JSON 3.1.2: with a JSON datacontenttype (*/json, */*+json) "the data member MUST be treated
    directly as a JSON value"; "if the data member is a string ... it MUST NOT further deserialize"."""
    for event_id, content_type, data in (
        ("number", "application/json", 1.5),
        ("string", "application/json", '{"not": "parsed"}'),
        ("suffix", "application/vnd.example+json", {"a": [1, None]}),
        ("text-json", "text/json; charset=utf-8", [1, 2]),
    ):
        row = await accepted(glue, mode, event(id=event_id, datacontenttype=content_type, data=data))
        assert row["data"] == data


@pytest.mark.parametrize("mode", JSON_MODES)
async def test_data_base64_is_binary_data(glue: Glue, mode: str) -> None:
    """JSON 3.1.2: "the presence of the data_base64 member clearly indicates that the value is a Base64
    encoded binary data, which the deserializer MUST decode into a binary runtime data type"; without a
    datacontenttype "the decoding MUST NOT make an assumption of JSON-formatted data" (current text)."""
    sent = event(datacontenttype=..., data=..., data_base64="eyAieHl6IjogMTIzIH0=")
    row = await accepted(glue, mode, sent)
    assert row["data_base64"] == "eyAieHl6IjogMTIzIH0=" and "data" not in row
    assert "datacontenttype" not in row
    await refused(glue, mode, event(data_base64="AAAA"), "either 'data' or 'data_base64'")
    await refused(glue, mode, event(id="b", data=..., data_base64="not base64!"), "not valid base64")


async def test_media_types_are_case_insensitive(glue: Glue) -> None:
    """current spec datacontenttype: the media type "MUST be treated in a case-insensitive manner by
    consumers, along with the attribute names in parameters": binary data so declared is JSON."""
    for content_type in ("Application/JSON; CharSet=utf-8", "TEXT/Vnd.Example+Json"):
        row = await accepted(glue, "binary", event(id=content_type, datacontenttype=content_type))
        assert row["data"] == {"number": 123}  # JSON, as for application/json
        assert row["datacontenttype"] == content_type  # kept as sent


# -- HTTP binding 3.3 and JSON format 4: batched content mode ---------------------------------------


async def test_a_batch_journals_every_event(glue: Glue) -> None:
    """HTTP 3.3 / JSON 4.1: a JSON array of events in the JSON format; other attributes MAY differ."""
    batch = [event(id="b-1"), event(id="b-2", datacontenttype="text/plain", data="two")]
    assert await glue.post(ENDPOINT, orjson.dumps(batch), BATCH) == (202, {"ids": ["b-1", "b-2"]})
    assert [(row["id"], row["data"]) for row in await stored(glue)] == [
        ("b-1", {"number": 123}),
        ("b-2", "two"),
    ]


async def test_an_empty_batch_is_valid_and_journals_nothing(glue: Glue) -> None:
    """JSON 4.3: "An example of an empty batch of CloudEvents (typically used in a response, but also
    valid in a request): []"; HTTP 3.3.2 (v1.0.2): "The batch MAY be empty"."""
    for body in (b"[]", b" [ ]\n"):
        status, answer = await glue.post(ENDPOINT, body, BATCH)
        assert (status, answer) == (202, {"ids": []})
    assert await glue.journaled() == []


async def test_a_batch_is_an_array_and_refused_whole_for_one_bad_event(glue: Glue) -> None:
    """JSON 4.1: "The outermost JSON element is a JSON Array"; each element is a CloudEvent."""
    status, answer = await glue.post(ENDPOINT, orjson.dumps(event()), BATCH)
    assert (status, answer) == (400, {"error": "a CloudEvents batch must be a JSON array, got object"})
    batch = [event(id="fine"), event(id="bad", type=...)]
    status, answer = await glue.post(ENDPOINT, orjson.dumps(batch), BATCH)
    assert (status, answer) == (400, {"error": "event 1: missing required attribute 'type'"})
    assert await glue.journaled() == []


# -- the spec's own examples ------------------------------------------------------------------------


async def test_the_examples_of_the_spec_are_journaled(glue: Glue) -> None:
    """spec.md "Example", json-format.md 3.2 and 4.3 (with the current text's additions), the HTTP
    binding's 3.1.4 binary request: each taken, with the attributes and data it shows."""
    spec_example = {
        "specversion": "1.0",
        "type": "com.github.pull_request.opened",
        "source": "https://github.com/cloudevents/spec/pull",
        "subject": "123",
        "id": "A234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "text/xml",
        "data": '<much wow="xml"/>',
    }
    number_data = {
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "subject": None,
        "id": "C234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/json",
        "data": 1.5,
    }
    no_content_type = {
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "D234-1234-1234",
        "data_base64": "eyAieHl6IjogMTIzIH0=",
    }
    batch = [
        {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext/4",
            "id": "B234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/vnd.apache.thrift.binary",
            "data_base64": base64.b64encode(b"\x80\x01\x00\x01").decode(),
        },
        {
            "specversion": "1.0",
            "type": "com.example.someotherevent",
            "source": "/mycontext/9",
            "id": "C234-1234-1234",
            "time": "2018-04-05T17:31:05Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/json",
            "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
        },
    ]
    for document in (spec_example, number_data, no_content_type):
        assert (await glue.post(ENDPOINT, orjson.dumps(document), STRUCTURED))[0] == 202
    assert (await glue.post(ENDPOINT, orjson.dumps(batch), BATCH))[0] == 202
    # json-format.md (current text): the binary-mode re-encodings of two of the examples.
    number_headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.someevent",
        "ce-source": "/mycontext",
        "ce-id": "C234-1234-1234-binary",
        "ce-time": "2018-04-05T17:31:00Z",
        "ce-comexampleextension1": "value",
        "ce-comexampleothervalue": "5",
        "content-type": "application/json",
    }
    assert (await glue.post(ENDPOINT, b"1.5", number_headers))[0] == 202
    untyped_headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.someevent",
        "ce-source": "/mycontext",
        "ce-id": "D234-1234-1234-binary",
    }
    assert (await glue.post(ENDPOINT, b'{ "xyz": 123 }', untyped_headers))[0] == 202

    rows = {(row["source"], row["id"]): row for row in await stored(glue)}
    assert len(rows) == 7
    assert rows["https://github.com/cloudevents/spec/pull", "A234-1234-1234"] == spec_example
    assert rows["/mycontext", "C234-1234-1234"]["data"] == 1.5
    assert "subject" not in rows["/mycontext", "C234-1234-1234"]
    untyped = rows["/mycontext", "D234-1234-1234"]
    assert untyped["data_base64"] == "eyAieHl6IjogMTIzIH0=" and "datacontenttype" not in untyped
    assert rows["/mycontext/4", "B234-1234-1234"]["data_base64"] == batch[0]["data_base64"]
    assert rows["/mycontext/9", "C234-1234-1234"]["data"] == batch[1]["data"]
    binary_number = rows["/mycontext", "C234-1234-1234-binary"]
    assert (binary_number["data"], binary_number["comexampleothervalue"]) == (1.5, "5")
    binary_untyped = rows["/mycontext", "D234-1234-1234-binary"]
    assert binary_untyped["data_base64"] == "eyAieHl6IjogMTIzIH0=" and "datacontenttype" not in binary_untyped
