"""What the decoders share: media types, strict JSON, and CloudEvents built through the SDK.

Everything here raises only :class:`glue.formats.DecodeError` (or its 415 subclass) for bad input, with
a reason that names the offending part and never echoes more than a short, clipped excerpt of it.
JSON is parsed with orjson, which already refuses what the journal could not store faithfully
(invalid UTF-8, lone surrogates, NaN/Infinity, nesting deeper than 1024).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import orjson
from cloudevents.core import base as ce_base
from cloudevents.core import exceptions as ce_errors
from cloudevents.core.formats import json as ce_json
from cloudevents.core.v1 import event as ce_v1

from glue import events
from glue.formats import base

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "CE_BATCH",
    "CE_JSON",
    "DISALLOWED",
    "FORMAT",
    "JSON",
    "MAX_DEPTH",
    "REQUIRED",
    "Data",
    "Factory",
    "Format",
    "clip",
    "cloudevent",
    "disallowed",
    "factory",
    "is_json",
    "is_json_data",
    "kind",
    "load_json",
    "load_object",
    "media_type",
    "media_type_problem",
    "parse_time",
    "path",
    "received_time",
    "scalar",
    "structured",
]

JSON: Final = "application/json"
CE_JSON: Final = "application/cloudevents+json"
CE_BATCH: Final = "application/cloudevents-batch+json"

#: Deepest JSON nesting taken. orjson parses up to 1024 levels but serialises only 255 (digests), and
#: the journal's JSON writer recurses; real payloads nest fewer than 10 levels.
MAX_DEPTH: Final = 128

#: RFC 3339 date-time (section 5.6); Python's fromisoformat alone takes more (week dates, offsets with
#: seconds) than the rest of the pipeline reads back.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?", re.ASCII)

#: Attributes CloudEvents 1.0 requires; the SDK would invent id/specversion/time, so check them first.
REQUIRED: Final = ("specversion", "id", "source", "type")

#: What CloudEvents 1.0 (type system, String) disallows in a string attribute: control characters
#: U+0000-U+001F and U+007F-U+009F, surrogates, and Unicode's noncharacters.
DISALLOWED: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)


def disallowed(value: str) -> re.Match[str] | None:
    """The first character of ``value`` that CloudEvents 1.0 disallows in a string, if any.

    Printable ASCII (nearly every value) passes in C: the regex's character set costs hundreds of
    instructions per character, which was 4 % of the intake's CPU."""
    return None if value.isascii() and value.isprintable() else DISALLOWED.search(value)


#: RFC 2046 media type (RFC 2045 section 5.1 grammar, as RFC 9110 section 8.3.1 writes it for HTTP):
#: ``type "/" subtype *(";" parameter)``, a parameter's value a token or a quoted string.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*+"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*(?:{_TOKEN}[ \t]*=[ \t]*(?:{_TOKEN}|{_QUOTED}))?)*+[ \t]*", re.ASCII
)

#: RFC 3986: a URI-reference (section 4.1, ``source``) and an absolute URI (section 4.3, ``dataschema``).
#: A scheme, or else no colon before the first ``/``, ``?`` or ``#`` (a relative reference's first
#: segment has none); then an authority after ``//`` or a path, a query, and for a reference a fragment.
#: Possessive loops keep a failed match linear.
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]++|{_PCT})"
_AUTHORITY = (
    rf"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=:]++|{_PCT})*+@)?"
    rf"(?:\[[0-9A-Za-z\-._~!$&'()*+,;=:]++\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]++|{_PCT})*+)"
    r"(?::[0-9]*+)?"
)
_HIER = rf"(?://{_AUTHORITY}(?:/{_PCHAR}*+)*+|/?(?:{_PCHAR}++(?:/{_PCHAR}*+)*+)?)"
_QUERY = rf"(?:\?(?:{_PCHAR}|[/?])*+)?"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+:"
_URI_REFERENCE = re.compile(
    rf"(?:{_SCHEME}|(?=[^:/?#]*+(?:[/?#]|\Z))){_HIER}{_QUERY}(?:#(?:{_PCHAR}|[/?])*+)?", re.ASCII
)
_ABSOLUTE_URI = re.compile(rf"{_SCHEME}{_HIER}{_QUERY}", re.ASCII)

#: The CloudEvents Integer type: signed 32 bits (spec section "Type System").
_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1


#: Values the grammars above accepted: a producer sends the same few sources and content types over
#: and over, and a set lookup costs a fraction of a match. Each set is bounded (cleared when full), so
#: a sender cannot grow it. ACCEPTED_MEDIA_TYPES lets binary mode check its content type header first.
ACCEPTED_MEDIA_TYPES: Final[set[str]] = {JSON, CE_JSON, "application/json; charset=utf-8", "text/plain"}
_ACCEPTED_SOURCES: Final[set[str]] = set()
_ACCEPTED_SCHEMAS: Final[set[str]] = set()
_ACCEPTED_LIMIT: Final = 4096


def _accepted(grammar: re.Pattern[str], accepted: set[str], value: str) -> bool:
    """Match ``value`` against ``grammar`` (for a value not in ``accepted`` yet) and remember it."""
    if not grammar.fullmatch(value):
        return False
    if len(accepted) >= _ACCEPTED_LIMIT:
        accepted.clear()
    accepted.add(value)
    return True


def media_type_problem(value: str) -> str | None:
    """Why ``value`` is not an RFC 2046 media type (``type/subtype`` and parameters), or None."""
    if value in ACCEPTED_MEDIA_TYPES or _accepted(_MEDIA_TYPE, ACCEPTED_MEDIA_TYPES, value):
        return None
    return f"{clip(value)} is not an RFC 2046 media type (type/subtype, then ;name=value parameters)"


def is_json_data(content_type: str) -> bool:
    """JSON format 3.1: a content type whose media type, without parameters, is ``*/json`` or
    ``*/*+json`` declares JSON data (case-insensitive, RFC 2045)."""
    subtype = content_type.split(";", 1)[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


Data = Any  # whatever JSON value (or bytes, str for non-JSON binary data) the event carries
Factory = Callable[[dict[str, Any], Data], events.CloudEvent]
E = TypeVar("E", bound=ce_base.BaseCloudEvent)


def clip(value: object, limit: int = 80) -> str:
    """A short, quoted excerpt of sender-controlled text for an error reason."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def kind(value: object) -> str:
    """The JSON name of a parsed value's type, for error reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def media_type(headers: Mapping[str, str]) -> str | None:
    """The Content-Type without parameters, lower case; None when the header is absent or empty."""
    raw = headers.get("content-type", "")
    mt = raw.split(";", 1)[0].strip().lower()
    return mt or None


def is_json(mt: str | None) -> bool:
    """A missing type counts as JSON (Argo's HTTP trigger and MinIO's Kafka target send none)."""
    return mt is None or mt == JSON or (mt.endswith("+json") and not mt.startswith("application/cloudevents"))


def _deeper_than(value: Any, levels: int) -> bool:
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels == 0 or any(_deeper_than(child, levels - 1) for child in children)


def load_json(body: bytes, what: str = "body") -> Any:
    if not body or body.isspace():
        raise base.DecodeError(f"{what} is empty")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise base.DecodeError(f"{what} is not valid JSON: {exc}") from None
    # Only a body with that many brackets can nest that deep; counting them is cheap.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise base.DecodeError(f"{what} nests JSON deeper than {MAX_DEPTH} levels")
    return value


def load_object(body: bytes) -> dict[str, Any]:
    value = load_json(body)
    if not isinstance(value, dict):
        raise base.DecodeError(f"body must be a JSON object, got {kind(value)}")
    return value


def path(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def scalar(value: Any) -> str | None:
    """A non-empty string or an integer as text (ids, refs); None for anything else."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_time(value: Any, what: str) -> dt.datetime:
    """An RFC 3339 timestamp. Without an offset the result is naive: the caller decides."""
    if not isinstance(value, str):
        raise base.DecodeError(f"{what} must be an RFC 3339 timestamp string, got {kind(value)}")
    if _RFC3339.fullmatch(value):
        try:
            return dt.datetime.fromisoformat(value.upper())
        except ValueError:
            pass  # out-of-range fields such as month 13
    raise base.DecodeError(f"{what} is not an RFC 3339 timestamp: {clip(value)}")


def received_time(delivery: events.Delivery) -> dt.datetime | None:
    """When the delivery arrived: the time of events that carry none (stable across a replay)."""
    try:
        return dt.datetime.fromtimestamp(delivery.received_at, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _validation_reason(exc: ce_errors.CloudEventValidationError) -> str:
    reasons = []
    for name, problems in exc.errors.items():
        problem = problems[0]
        if isinstance(problem, ce_errors.MissingRequiredAttributeError):
            reasons.append(f"missing required attribute {clip(name)}")
        elif isinstance(problem, ce_errors.CustomExtensionAttributeError) and name == "data":
            reasons.append("the attribute name 'data' is reserved (spec 1.0: naming conventions)")
        elif isinstance(problem, ce_errors.CustomExtensionAttributeError):
            reasons.append(
                f"extension attribute {clip(name)} is not a valid name (lower-case letters and digits only)"
            )
        elif isinstance(problem, ce_errors.InvalidAttributeTypeError):
            expected = "a timezone-aware RFC 3339 timestamp" if name == "time" else "a string"
            reasons.append(f"attribute {clip(name)} must be {expected}")
        else:
            reasons.append(f"attribute {clip(name)} is invalid: {str(problem)[:120]}")
    return "invalid CloudEvent: " + "; ".join(reasons)


def _check_grammars(attributes: dict[str, Any]) -> None:
    """The core attributes whose strings have a grammar: ``source`` an RFC 3986 URI-reference,
    ``datacontenttype`` an RFC 2046 media type, ``dataschema`` an absolute URI (spec 1.0, section 3).
    Called for values not accepted before; a value of another type is left to the SDK."""
    source = attributes["source"]
    if (
        isinstance(source, str)
        and source
        and source not in _ACCEPTED_SOURCES
        and not _accepted(_URI_REFERENCE, _ACCEPTED_SOURCES, source)
    ):
        raise base.DecodeError(
            f"attribute 'source' is {clip(source)}, not an RFC 3986 URI-reference "
            "(percent-encode spaces and other characters outside RFC 3986)"
        )
    content_type = attributes.get("datacontenttype")
    if isinstance(content_type, str) and content_type:
        problem = media_type_problem(content_type)
        if problem:
            raise base.DecodeError(f"attribute 'datacontenttype': {problem}")
    schema = attributes.get("dataschema")
    if (
        isinstance(schema, str)
        and schema
        and schema not in _ACCEPTED_SCHEMAS
        and not _accepted(_ABSOLUTE_URI, _ACCEPTED_SCHEMAS, schema)
    ):
        raise base.DecodeError(
            f"attribute 'dataschema' is {clip(schema)}, not an absolute URI "
            "(RFC 3986 section 4.3: a scheme, no fragment)"
        )


#: Attribute values that are neither strings nor numbers: booleans, and ``time`` once parsed.
_NOT_NUMBERS: Final = (bool, dt.datetime)


def cloudevent(
    attributes: dict[str, Any], data: Data = None, *, default_time: dt.datetime | None = None
) -> events.CloudEvent:
    """A CloudEvents 1.0 event from wire attributes; any missing or invalid attribute is a DecodeError.

    The SDK would fill in a random ``id`` and ``specversion`` 1.0 when absent; for an inbound event
    that would forge an identity, so they are required here. ``time`` defaults to ``default_time``.
    """
    for name in REQUIRED:
        if name not in attributes:
            raise base.DecodeError(f"missing required attribute {name!r}")
    if attributes["specversion"] != "1.0":
        raise base.DecodeError(
            f"specversion {clip(attributes['specversion'])} is not supported: send CloudEvents 1.0"
        )
    for name, value in attributes.items():
        if isinstance(value, str):
            found = disallowed(value)
            if found:
                raise base.DecodeError(
                    f"attribute {clip(name)} holds U+{ord(found.group()):04X}, a character CloudEvents 1.0 "
                    "does not allow in a string (control characters, surrogates, noncharacters)"
                )
        elif isinstance(value, _NOT_NUMBERS):
            pass
        elif isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                raise base.DecodeError(
                    f"attribute {clip(name)} is {value}, outside the CloudEvents Integer range "
                    f"(signed 32 bits: {_INT_MIN} to {_INT_MAX})"
                )
        elif isinstance(value, float):
            raise base.DecodeError(
                f"attribute {clip(name)} is {value!r}: a CloudEvents Integer has no fraction or "
                "exponent (send a whole number, or a string)"
            )
        else:
            raise base.DecodeError(
                f"attribute {clip(name)} must be a string, integer or boolean, got {kind(value)}"
            )
    # Values are hashable here (objects and arrays were refused above).
    if (
        attributes["source"] not in _ACCEPTED_SOURCES
        or attributes.get("datacontenttype", JSON) not in ACCEPTED_MEDIA_TYPES
        or "dataschema" in attributes
    ):
        _check_grammars(attributes)
    if "time" not in attributes and default_time is not None:
        attributes["time"] = default_time
    if _sdk_accepts(attributes):
        return _Checked(attributes, data)
    try:
        return ce_v1.CloudEvent(attributes, data)
    except ce_errors.CloudEventValidationError as exc:
        raise base.DecodeError(_validation_reason(exc)) from None


class _Checked(ce_v1.CloudEvent):
    """An SDK event whose attributes :func:`_sdk_accepts` found valid by the SDK's own rules.

    The SDK validates every attribute again in its constructor, in dicts of error lists built for
    each event, which cost as much as the rest of decoding a bus message; an event it would refuse
    never takes this class, so the SDK still writes the reasons."""

    @staticmethod
    def _validate_attribute(attributes: dict[str, Any]) -> None:
        return None


#: Attributes the SDK knows; any other name is an extension attribute.
_CORE: Final = frozenset(
    ("id", "source", "type", "specversion", "datacontenttype", "dataschema", "subject", "time")
)
#: The SDK's rule for an extension attribute's name (and 'data' is reserved).
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]+")
#: Extension names that passed it (bounded as the accepted values above).
_ACCEPTED_EXTENSIONS: Final[set[str]] = set()


def _sdk_accepts(attributes: dict[str, Any]) -> bool:
    """True when the SDK's validation (cloudevents.core.v1.event.CloudEvent._validate_attribute)
    would pass: non-empty string ``id`` and ``source``, a string ``type``, ``specversion`` 1.0,
    ``time`` timezone-aware, non-empty string optional attributes, extension names of lower-case
    letters and digits. Stricter than the SDK where it is cheaper to be (the SDK decides then)."""
    ident, source = attributes.get("id"), attributes.get("source")
    if not (type(ident) is str and ident and type(source) is str and source):
        return False
    if type(attributes.get("type")) is not str or attributes.get("specversion") != "1.0":
        return False
    for name, value in attributes.items():
        if name in _CORE:
            if name == "time":
                if not (isinstance(value, dt.datetime) and value.tzinfo is not None):
                    return False
            elif type(value) is not str or not value:
                return False
        elif name not in _ACCEPTED_EXTENSIONS:
            if name == "data" or not _EXTENSION_NAME.fullmatch(name):
                return False
            if len(_ACCEPTED_EXTENSIONS) >= _ACCEPTED_LIMIT:
                _ACCEPTED_EXTENSIONS.clear()
            _ACCEPTED_EXTENSIONS.add(name)
    return True


def factory(delivery: events.Delivery) -> Factory:
    """An SDK event factory that validates strictly and dates undated events at their arrival."""
    default_time = received_time(delivery)

    def build(attributes: dict[str, Any], data: Data) -> events.CloudEvent:
        return cloudevent(attributes, data, default_time=default_time)

    return build


def structured(value: Any, build: Callable[[dict[str, Any], Data], E]) -> E:
    """One event in the JSON event format (a parsed structured-mode body or batch element)."""
    if not isinstance(value, dict):
        raise base.DecodeError(f"a structured CloudEvent must be a JSON object, got {kind(value)}")
    # JSON format 1.0 section 2.4: a null attribute value is the same as an absent attribute.
    attributes = {name: v for name, v in value.items() if v is not None}
    has_data = "data" in attributes
    data = attributes.pop("data", None)
    encoded = attributes.pop("data_base64", None)
    if encoded is not None:
        if has_data:
            raise base.DecodeError("an event carries either 'data' or 'data_base64', not both")
        if not isinstance(encoded, str):
            raise base.DecodeError(f"'data_base64' must be a string, got {kind(encoded)}")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise base.DecodeError("'data_base64' is not valid base64") from None
    if "time" in attributes:
        attributes["time"] = parse_time(attributes["time"], "attribute 'time'")
    return build(attributes, data)


class Format(ce_json.JSONFormat):
    """The SDK's JSON event format, parsing with orjson and turning bad input into DecodeError.

    Used with the SDK's HTTP and Kafka bindings, which read attributes from headers and call
    :meth:`read_data` for a binary-mode body or :meth:`read` for a structured one.
    """

    def read(self, event_factory: ce_base.EventFactory | None, data: str | bytes) -> ce_base.BaseCloudEvent:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        return structured(load_json(raw), event_factory or cloudevent)

    def read_data(self, body: bytes, datacontenttype: str | None) -> Data:
        """Binary-mode data. Without a content type nothing is assumed: the bytes are kept as sent
        (JSON format 1.0.3 section 3.1.2; binary mode's data is opaque). A body declared JSON must
        be JSON (the SDK would keep it as a string); other text is kept as a string."""
        if not body:
            return None
        if datacontenttype is None:
            return body
        if datacontenttype == JSON or is_json_data(datacontenttype):
            return load_json(body)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body


FORMAT: Final = Format()
