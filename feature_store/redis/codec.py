"""How the Redis store turns profiles, events and decisions into bytes, and back.

Memory is paid per customer, so the encodings are compact but stay plain JSON underneath:

* profiles: the compact binary form of `feature_store.profile_codec` (a versioned msgpack
  array), zlib-compressed when it is at least `compress_min_bytes` long and compression makes
  it smaller. Profiles of earlier versions (JSON, maybe compressed) are still read, and the
  next update rewrites them.
* decisions: the model's JSON, compressed the same way. The first byte tells the forms apart:
  JSON starts with `{`, a zlib stream with `x` (0x78), msgpack with an array header.
* event log entries: a JSON array `[event_id, touchpoint, channel, type, occurred_at,
  attributes]`, without the customer id (the key holds it): ~110 bytes for a demo event
  against ~210 for the event's JSON object. A future format would start with another byte
  than `[`.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.events import Event
from engine.profile import Profile
from feature_store import profile_codec
from feature_store.errors import StoreError

#: zlib's default level: within 1% of level 9 on profiles, and a few tens of microseconds.
_ZLIB_LEVEL = 6
_JSON_START = b"{"[0]
_ZLIB_START = b"x"[0]
_LOG_ENTRY_START = b"["[0]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


class CorruptValue(StoreError):
    """A stored value is not in any encoding this version reads."""


def encode_document(document_json: str, compress_min_bytes: int) -> bytes:
    """A model's JSON as stored: compressed if that is smaller (see the module docstring)."""
    raw = document_json.encode()
    if len(raw) < compress_min_bytes:
        return raw
    compressed = zlib.compress(raw, _ZLIB_LEVEL)
    return compressed if len(compressed) < len(raw) else raw


def decode_document(stored: bytes) -> bytes:
    """The JSON of a stored document, whichever way it was encoded."""
    first = stored[0] if stored else None
    if first == _JSON_START:
        return stored
    if first == _ZLIB_START:
        try:
            return zlib.decompress(stored)
        except zlib.error as exc:
            raise CorruptValue(f"a stored document does not decompress: {exc}") from exc
    raise CorruptValue("a stored document is neither JSON nor zlib")


def encode_profile(profile: Profile, compress_min_bytes: int) -> bytes:
    """The profile as stored: its compact binary form (`feature_store.profile_codec`, a msgpack
    array whose first byte is never `{` or `x`), zlib-compressed when that is smaller."""
    raw = profile_codec.encode_profile(profile)
    if len(raw) < compress_min_bytes:
        return raw
    compressed = zlib.compress(raw, _ZLIB_LEVEL)
    return compressed if len(compressed) < len(raw) else raw


def decode_profile(stored: bytes) -> Profile:
    """The profile of its stored bytes, whichever encoding wrote them: the binary form, or the
    JSON one of earlier versions (either maybe compressed), which the next update rewrites."""
    if stored[:1] == b"x":
        try:
            stored = zlib.decompress(stored)
        except zlib.error as exc:
            raise CorruptValue(f"a stored profile does not decompress: {exc}") from exc
    return profile_codec.decode_profile(stored)


def profile_version(stored: bytes | None) -> str:
    """The version a commit is conditioned on: the SHA-1 hex of the stored profile, '' if none
    (the scripts compute the same with `redis.sha1hex`)."""
    return "" if stored is None else hashlib.sha1(stored, usedforsecurity=False).hexdigest()


def as_bytes(value: bytes | str) -> bytes:
    """A reply as bytes: the client is made with decode_responses=False, so replies are bytes;
    redis-py's types cannot know that."""
    return value if isinstance(value, bytes) else value.encode()


def encode_log_entry(event: Event) -> bytes:
    """The event as one entry of its customer's event log (see the module docstring)."""
    fields = event.model_dump(mode="json", exclude={"customer_id"})
    entry = [fields[name] for name in _LOG_ENTRY_FIELDS]
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()


def decode_log_entry(customer_id: str, stored: bytes) -> Event:
    """The event of a log entry of `customer_id`'s log (validated again, like any event)."""
    if not stored or stored[0] != _LOG_ENTRY_START:
        raise CorruptValue("an event log entry is not a JSON array")
    values: list[Any] = json.loads(stored)
    if len(values) != len(_LOG_ENTRY_FIELDS):
        raise CorruptValue(f"an event log entry has {len(values)} fields")
    return Event.model_validate(
        {"customer_id": customer_id, **dict(zip(_LOG_ENTRY_FIELDS, values, strict=True))}
    )


def event_log_body(customer_id: str, stored: bytes) -> tuple[str, int]:
    """The event of a log entry as `Event.model_dump_json()` has it, and when it occurred in
    microseconds since the Unix epoch; without validating it again (it was, when logged)."""
    if not stored or stored[0] != _LOG_ENTRY_START:
        raise CorruptValue("an event log entry is not a JSON array")
    values: list[Any] = json.loads(stored)
    if len(values) != len(_LOG_ENTRY_FIELDS):
        raise CorruptValue(f"an event log entry has {len(values)} fields")
    event = dict(zip(_LOG_ENTRY_FIELDS, values, strict=True))
    fields = {name: customer_id if name == "customer_id" else event[name] for name in _EVENT_FIELDS}
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return body, microseconds(datetime.fromisoformat(event["occurred_at"]))


def microseconds(when: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float rounding)."""
    return (when - _EPOCH) // _ONE_MICROSECOND


def log_entry_event_id(stored: bytes) -> str:
    """The event id of a log entry, without validating the rest of it."""
    values: list[Any] = json.loads(stored) if stored[:1] == b"[" else []
    if not values or not isinstance(values[0], str):
        raise CorruptValue("an event log entry has no event id")
    return values[0]


#: The order of an event log entry's fields: stored data, so never reorder it.
_LOG_ENTRY_FIELDS = ("event_id", "touchpoint", "channel", "type", "occurred_at", "attributes")
#: The fields of an `Event`, in the order of its JSON.
_EVENT_FIELDS = tuple(Event.model_fields)
