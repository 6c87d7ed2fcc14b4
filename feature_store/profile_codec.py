"""The profile's stored form: compact binary (msgpack), versioned, cheap to decode and encode.

`encode_profile` writes a msgpack array that starts with `SCHEMA_VERSION`; each record is a
positional array of its fields (no field names); datetimes in UTC are msgpack timestamps
(decoded in C), any other offset is kept exactly as an ISO string in an extension, amounts are
decimal strings, and the idempotence ring is its 16-byte entries packed as one
binary. Decoding builds the profile's records directly, without pydantic's validation: the
bytes were written by `encode_profile` from a valid profile, so they are valid already.

`decode_profile` still reads the JSON form stores wrote before (a document starting with `{`):
old rows migrate by being decoded as JSON and written back in the binary form at their next
update. A newer `SCHEMA_VERSION` than this code knows is refused (`UnknownProfileVersion`).
"""

from __future__ import annotations

import itertools
import struct
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from engine.preferences import ConsentRecord, ConsentStatus, Purpose, StatedPreference
from engine.profile import (
    ActionFeedback,
    CaseRecord,
    DecayedCount,
    DefaultFeedback,
    Exposure,
    FeedbackRecord,
    Profile,
    RequestRecord,
    Stamp,
)

#: Version of the binary layout below; bump it (and read the old one) for any change.
SCHEMA_VERSION = 1

_ZERO = timedelta(0)
_ISO_TIME = 1  # msgpack extension code of a datetime not in UTC
_SEEN_ENTRY = struct.Struct(">qQ")
_ENCODER = msgspec.msgpack.Encoder()
_PROFILE_FIELDS = frozenset(Profile.model_fields)
_CASE_FIELDS = frozenset(CaseRecord.model_fields)
_STATED_FIELDS = frozenset(StatedPreference.model_fields)
_CONSENT_FIELDS = frozenset(ConsentRecord.model_fields)


class UnknownProfileVersion(ValueError):
    """A stored profile was written by a newer Rapport than this one."""


def encode_profile(profile: Profile) -> bytes:
    """The profile's stored form (see the module docstring)."""
    fields = profile.__dict__
    return _ENCODER.encode(
        [
            SCHEMA_VERSION,
            fields["customer_id"],
            fields["event_count"],
            _time_or_none(fields["first_seen"]),
            _time_or_none(fields["last_seen"]),
            _pack_seen(fields["seen"]),
            _counts(fields["channel_usage"]),
            _counts(fields["contact_channels"]),
            {kind: _counts(by) for kind, by in fields["request_channels"].items()},
            {key: [_request(r) for r in records] for key, records in fields["habits"].items()},
            {
                key: {sig: _default_feedback(f) for sig, f in by.items()}
                for key, by in fields["default_feedback"].items()
            },
            {
                key: [s.value, s.source, _time(s.stated_at), s.event_id]
                for key, s in fields["stated"].items()
            },
            {
                key: [
                    c.purpose.value,
                    c.channel,
                    c.status.value,
                    c.source,
                    _time(c.changed_at),
                    c.event_id,
                ]
                for key, c in fields["consents"].items()
            },
            _time_or_none(fields["profiling_revoked_at"]),
            {
                key: [
                    c.case_id,
                    c.kind,
                    _time_or_none(c.opened_at),
                    _time_or_none(c.resolved_at),
                    c.topic,
                    c.channel,
                ]
                for key, c in fields["cases"].items()
            },
            [
                [f.event_id, _time(f.at), f.touchpoint, f.channel, f.score]
                for f in fields["feedback"]
            ],
            [
                [x.event_id, _time(x.at), x.action_id, x.channel, x.purpose]
                for x in fields["exposures"]
            ],
            {
                key: [f.accepted, f.converted, f.converted_value, _stamps(f.declines)]
                for key, f in fields["action_feedback"].items()
            },
        ]
    )


def decode_profile(data: bytes) -> Profile:
    """A profile from its stored form: the binary one, or the JSON one stores wrote before."""
    if data[:1] == b"{":
        return Profile.model_validate_json(data)
    (
        version,
        customer_id,
        event_count,
        first_seen,
        last_seen,
        seen,
        channel_usage,
        contact_channels,
        request_channels,
        habits,
        default_feedback,
        stated,
        consents,
        profiling_revoked_at,
        cases,
        feedback,
        exposures,
        action_feedback,
    ) = _DECODER.decode(data)
    if version != SCHEMA_VERSION:
        raise UnknownProfileVersion(
            f"profile stored with schema version {version}; this Rapport reads {SCHEMA_VERSION}"
        )
    profile: Profile = _construct(
        Profile,
        _PROFILE_FIELDS,
        customer_id=customer_id,
        event_count=event_count,
        first_seen=first_seen,
        last_seen=last_seen,
        seen=list(_SEEN_ENTRY.iter_unpack(seen)),
        channel_usage=_decayed(channel_usage),
        contact_channels=_decayed(contact_channels),
        request_channels={kind: _decayed(by) for kind, by in request_channels.items()},
        habits={
            key: [
                RequestRecord(event_id, at, None if amount is None else Decimal(amount), *rest)
                for event_id, at, amount, *rest in records
            ]
            for key, records in habits.items()
        },
        default_feedback={
            key: {
                sig: DefaultFeedback(accepted, last_acc, _stamp_list(d), last)
                for sig, (accepted, last_acc, d, last) in by.items()
            }
            for key, by in default_feedback.items()
        },
        stated={
            key: _construct(
                StatedPreference,
                _STATED_FIELDS,
                value=value,
                source=source,
                stated_at=stated_at,
                event_id=event_id,
            )
            for key, (value, source, stated_at, event_id) in stated.items()
        },
        consents={
            key: _construct(
                ConsentRecord,
                _CONSENT_FIELDS,
                purpose=Purpose(purpose),
                channel=channel,
                status=ConsentStatus(status),
                source=source,
                changed_at=changed_at,
                event_id=event_id,
            )
            for key, (purpose, channel, status, source, changed_at, event_id) in consents.items()
        },
        profiling_revoked_at=profiling_revoked_at,
        cases={
            key: _construct(
                CaseRecord,
                _CASE_FIELDS,
                case_id=case_id,
                kind=kind,
                opened_at=opened_at,
                resolved_at=resolved_at,
                topic=topic,
                channel=channel,
            )
            for key, (case_id, kind, opened_at, resolved_at, topic, channel) in cases.items()
        },
        feedback=[
            FeedbackRecord(event_id, at, touchpoint, channel, score)
            for event_id, at, touchpoint, channel, score in feedback
        ],
        exposures=[
            Exposure(event_id, at, action_id, channel, purpose)
            for event_id, at, action_id, channel, purpose in exposures
        ],
        action_feedback={
            key: ActionFeedback(accepted, converted, value, _stamp_list(declines))
            for key, (accepted, converted, value, declines) in action_feedback.items()
        },
    )
    return profile


def _construct(model: Any, fields: frozenset[str], **values: Any) -> Any:
    """A model instance as `model_validate_json` of its own dump makes it, without validating
    again what `encode_profile` wrote from a valid one (every field counts as set)."""
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(fields))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


# ---- datetimes: msgpack timestamps in UTC; any other offset (or none) kept in an extension ----


def _time(at: datetime) -> datetime | msgspec.msgpack.Ext:
    # msgpack's timestamp is an instant in UTC: it would lose another offset.
    if at.utcoffset() == _ZERO:
        return at
    return msgspec.msgpack.Ext(_ISO_TIME, at.isoformat().encode())


def _time_or_none(at: datetime | None) -> datetime | msgspec.msgpack.Ext | None:
    return None if at is None else _time(at)


def _extension(code: int, data: memoryview) -> Any:
    if code == _ISO_TIME:
        return datetime.fromisoformat(bytes(data).decode())
    raise UnknownProfileVersion(f"unknown msgpack extension {code} in a stored profile")


# ---- records ------------------------------------------------------------------------------------


def _pack_seen(seen: list[tuple[int, int]]) -> bytes:
    return struct.pack(f">{'qQ' * len(seen)}", *itertools.chain.from_iterable(seen))


def _counts(counts: dict[str, DecayedCount]) -> dict[str, list[Any]]:
    return {key: [c.value, _time_or_none(c.at), c.total] for key, c in counts.items()}


def _decayed(stored: dict[str, list[Any]]) -> dict[str, DecayedCount]:
    return {key: DecayedCount(*count) for key, count in stored.items()}


def _request(record: RequestRecord) -> list[Any]:
    amount = record.amount
    return [
        record.event_id,
        _time(record.at),
        None if amount is None else str(amount),
        record.currency,
        record.receipt,
        record.options,
    ]


def _stamps(stamps: list[Stamp]) -> list[list[Any]]:
    return [[_time(s.at), s.event_id] for s in stamps]


def _stamp_list(stored: list[list[Any]]) -> list[Stamp]:
    return [Stamp(at, event_id) for at, event_id in stored]


def _default_feedback(feedback: DefaultFeedback) -> list[Any]:
    return [
        feedback.accepted,
        _time_or_none(feedback.last_accepted_at),
        _stamps(feedback.declines),
        _time_or_none(feedback.last_at),
    ]


_DECODER = msgspec.msgpack.Decoder(ext_hook=_extension)
