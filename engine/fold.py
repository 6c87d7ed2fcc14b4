"""The fold: `profile = fold(events)`, one event at a time with `apply(profile, event)`.

Laws (property-tested in tests/engine/test_fold_laws.py):

* idempotent: applying an event already folded changes nothing;
* order-independent: any permutation of the same events gives the same profile (floats equal
  up to rounding), as long as no event is older than the `seen_capacity` latest events;
* bounded: the profile's size has a ceiling set by `EngineConfig`, whatever the history.

An event older than all of the `seen_capacity` latest events of a customer cannot be told apart
from a duplicate by the profile alone, so it is reported `TOO_LATE` and not folded. A store that
has checked the event id against its own log (every store does) folds it anyway
(`known_new=True`): then order-independence holds for any lateness. The online store and
training replay share this function, so both see the same profile.

Consent (engine/consent.py) is the one exception to order-independence, on purpose: a profiling
denial or revocation wipes everything learned implicitly (channel counts, habits, answers to
defaults), including what came from events dated after it that happened to arrive first. Privacy
errs on the side of forgetting; what the customer stated and service data (cases, feedback,
consents) are kept.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol, TypeVar

from engine.config import EngineConfig
from engine.consent import consent_key, may_learn_from
from engine.errors import EngineError
from engine.events import (
    CONTACT_CHANNELS,
    ComplaintAttributes,
    ConsentAttributes,
    Event,
    EventType,
    ExposureAttributes,
    FeedbackAttributes,
    IncidentAttributes,
    OutcomeAttributes,
    OutcomeKind,
    PreferenceAttributes,
    RequestAttributes,
)
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
    habit_key,
)

DEFAULT_CONFIG = EngineConfig()

T = TypeVar("T")


class _Dated(Protocol):
    """A record of one event: ordered by (at, event_id) in the profile's lists."""

    @property
    def at(self) -> datetime: ...

    @property
    def event_id(self) -> str: ...


D = TypeVar("D", bound=_Dated)


class FoldStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    TOO_LATE = "too_late"


class WrongCustomer(EngineError):
    """An event was folded into another customer's profile."""


def new_profile(customer_id: str) -> Profile:
    return Profile(customer_id=customer_id)


def apply(profile: Profile, event: Event, config: EngineConfig = DEFAULT_CONFIG) -> Profile:
    """Return the profile with `event` folded in; `profile` itself is not changed."""
    return fold(profile, [event], config)


def fold(
    profile: Profile | None, events: Iterable[Event], config: EngineConfig = DEFAULT_CONFIG
) -> Profile:
    """Fold `events` (in any order) into a copy of `profile`, or into a new profile."""
    folded, _ = fold_with_status(profile, events, config)
    return folded


def fold_with_status(
    profile: Profile | None, events: Iterable[Event], config: EngineConfig = DEFAULT_CONFIG
) -> tuple[Profile, list[FoldStatus]]:
    """Like `fold`, and tell for each event whether it was applied, a duplicate or too late."""
    events = list(events)
    if profile is None:
        if not events:
            raise EngineError("cannot fold no events into no profile")
        profile = new_profile(events[0].customer_id)
    else:
        profile = profile.model_copy(deep=True)
    return profile, [apply_in_place(profile, event, config) for event in events]


def fold_in_place(
    profile: Profile | None,
    customer_id: str,
    events: Iterable[Event],
    config: EngineConfig,
    *,
    known_new: bool = False,
) -> tuple[Profile, list[FoldStatus]]:
    """Like `fold_with_status`, but mutates `profile`: for callers that own a fresh copy (a
    store that has just decoded it), where the defensive deep copy would be wasted work.

    `known_new`: the caller guarantees no event was folded before (a store that checked
    every id against its own log), so events older than the idempotence ring are folded
    too instead of being TOO_LATE.
    """
    profile = profile if profile is not None else new_profile(customer_id)
    return profile, [
        apply_in_place(profile, event, config, known_new=known_new) for event in events
    ]


def apply_in_place(
    profile: Profile, event: Event, config: EngineConfig, *, known_new: bool = False
) -> FoldStatus:
    """Fold one event into `profile`, mutating it. Callers own the copy (see `fold`)."""
    if event.customer_id != profile.customer_id:
        raise WrongCustomer(f"event {event.event_id} is not for this profile")
    status = _remember(profile.seen, event, config.seen_capacity, known_new=known_new)
    if status is not _APPLIED:
        return status
    # An offer sent is not the customer's doing: it does not make them seen.
    profile.count_event(None if event.type is _ACTION_EXPOSED else event.occurred_at)
    _APPLIERS[event.type](profile, event, config)
    return _APPLIED


# Python 3.11 looks enum members up through a descriptor, at 0.1 µs each (3.12 no longer
# does): the members compared on every event are bound once.
_APPLIED = FoldStatus.APPLIED
_ACTION_EXPOSED = EventType.ACTION_EXPOSED


_DIGEST = struct.Struct(">Q")  # faster than int.from_bytes(..., "big"), the same number


def event_digest(event_id: str) -> int:
    """A stable 64-bit digest of an event id (the profile stores digests, not ids)."""
    digest: int = _DIGEST.unpack(hashlib.blake2b(event_id.encode(), digest_size=8).digest())[0]
    return digest


def _remember(
    seen: list[tuple[int, int]], event: Event, capacity: int, *, known_new: bool
) -> FoldStatus:
    """Add the event's mark to the sorted idempotence ring `seen`, unless it is there."""
    # Microseconds since the epoch, exact (a float timestamp is not).
    mark = ((event.occurred_at - _EPOCH) // _MICROSECOND, event_digest(event.event_id))
    if not seen or seen[-1] < mark:
        seen.append(mark)  # the usual case: the latest event so far
    else:
        index = bisect.bisect_left(seen, mark)
        if seen[index] == mark:
            return FoldStatus.DUPLICATE
        if len(seen) >= capacity and index == 0:
            # Older than every remembered id: the ring cannot tell it from a duplicate.
            return _APPLIED if known_new else FoldStatus.TOO_LATE
        seen.insert(index, mark)
    if len(seen) > capacity:
        del seen[0]
    return _APPLIED


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _count(counts: dict[str, DecayedCount], key: str, when: datetime, half_life: float) -> None:
    count = counts.get(key)
    if count is None:  # not setdefault(key, DecayedCount(...)): that builds one every time
        counts[key] = DecayedCount(value=1.0, at=when, total=1)
    else:
        count.add(when, half_life)


def _by_time(record: _Dated) -> tuple[datetime, str]:
    return record.at, record.event_id


def _insert_latest(items: list[D], item: D, limit: int) -> None:
    """Insert `item` into `items`, kept sorted by (at, event_id), and keep the `limit` latest.

    The profile's lists are always sorted, so a binary insertion gives what appending and
    sorting again gave (after any equal key, as the stable sort did), at a fraction of the
    cost: sorting called the key function on every record of the list for every event.
    """
    if not items or _by_time(items[-1]) <= _by_time(item):
        items.append(item)  # the usual case: events mostly arrive in time order
    else:
        bisect.insort(items, item, key=_by_time)
    if len(items) > limit:
        del items[: len(items) - limit]


def _evict_stalest(mapping: dict[str, T], limit: int, latest: Callable[[T], datetime]) -> None:
    while len(mapping) > limit:
        stalest = min(mapping, key=lambda key: (latest(mapping[key]), key))
        del mapping[stalest]


def _latest_count(counts: dict[str, DecayedCount]) -> datetime:
    return max(count.at for count in counts.values() if count.at is not None)


def _apply_request(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, RequestAttributes)
    if not may_learn_from(profile, event.occurred_at, config):
        return
    half_life = config.channel_half_life_days
    channel, when = _channel(event), event.occurred_at
    _count(profile.channel_usage, channel, when, half_life)
    by_kind = profile.request_channels.setdefault(attributes.request, {})
    _count(by_kind, channel, when, half_life)
    _evict_stalest(profile.request_channels, config.max_request_kinds, _latest_count)

    recent = profile.habits.setdefault(habit_key(attributes.request, channel), [])
    _insert_latest(recent, _request_record(event, attributes), config.habit_window)
    _evict_stalest(profile.habits, config.max_habit_keys, _latest_request)


def _channel(event: Event) -> str:
    # str() of a StrEnum is its value, and on Python 3.11 a third of the cost of `.value`.
    return str(event.channel)


def _latest_request(records: list[RequestRecord]) -> datetime:
    return records[-1].at


def request_record(event: Event) -> RequestRecord:
    """A request event reduced to what a habit is made of."""
    attributes = event.typed
    assert isinstance(attributes, RequestAttributes)
    return _request_record(event, attributes)


def _request_record(event: Event, attributes: RequestAttributes) -> RequestRecord:
    # Positional, in the order of RequestRecord's fields: keyword arguments doubled the cost
    # of building the record, which the fold does for every request, so replay's speed hangs on it.
    return RequestRecord(
        event.event_id,
        event.occurred_at,
        attributes.amount,
        attributes.currency,
        attributes.receipt,
        dict(attributes.options),
    )


def _apply_contact(profile: Profile, event: Event, config: EngineConfig) -> None:
    if not may_learn_from(profile, event.occurred_at, config):
        return
    half_life, channel = config.channel_half_life_days, _channel(event)
    _count(profile.channel_usage, channel, event.occurred_at, half_life)
    if event.channel in CONTACT_CHANNELS:
        _count(profile.contact_channels, channel, event.occurred_at, half_life)


def _apply_complaint_opened(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, ComplaintAttributes)
    _apply_contact(profile, event, config)
    case = profile.cases.setdefault(attributes.case_id, CaseRecord(case_id=attributes.case_id))
    if case.opened_at is None or event.occurred_at < case.opened_at:
        case.opened_at = event.occurred_at
        case.topic = attributes.topic or case.topic
        case.channel = event.channel.value
    bound_cases(profile, config)


def _apply_complaint_resolved(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, ComplaintAttributes | IncidentAttributes)
    case = profile.cases.setdefault(attributes.case_id, CaseRecord(case_id=attributes.case_id))
    if case.resolved_at is None or event.occurred_at > case.resolved_at:
        case.resolved_at = event.occurred_at
    bound_cases(profile, config)


def _apply_incident_opened(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, IncidentAttributes)
    case = profile.cases.setdefault(
        attributes.case_id, CaseRecord(case_id=attributes.case_id, kind=attributes.kind.value)
    )
    if case.opened_at is None or event.occurred_at < case.opened_at:
        case.opened_at = event.occurred_at
        case.kind = attributes.kind.value
        case.topic = attributes.topic or case.topic
        case.channel = event.channel.value
    bound_cases(profile, config)


def _apply_exposure(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, ExposureAttributes)
    if not attributes.limited:
        return  # no cap or cooldown counts it: it would only push out deliveries that do
    exposure = Exposure(
        event_id=event.event_id,
        at=event.occurred_at,
        action_id=attributes.action_id,
        channel=attributes.delivery_channel.value,
        purpose=attributes.purpose.value,
    )
    _insert_latest(profile.exposures, exposure, config.exposures_kept)


def _apply_action_outcome(
    profile: Profile, event: Event, attributes: OutcomeAttributes, config: EngineConfig
) -> None:
    """Answers to actions are kept whatever the profiling consent: a 'no' must be honoured."""
    feedback = profile.action_feedback.setdefault(attributes.target, ActionFeedback())
    if attributes.outcome is OutcomeKind.ACCEPTED:
        feedback.accepted += 1
    elif attributes.outcome is OutcomeKind.CONVERTED:
        feedback.converted += 1
        feedback.converted_value += attributes.value or 0.0
    elif attributes.outcome is OutcomeKind.DECLINED:
        decline = Stamp(at=event.occurred_at, event_id=event.event_id)
        _insert_latest(feedback.declines, decline, config.action_declines_kept)
    while len(profile.action_feedback) > config.max_actions_tracked:
        del profile.action_feedback[min(profile.action_feedback, key=_feedback_order(profile))]


def _feedback_order(profile: Profile) -> Callable[[str], tuple[int, str]]:
    def order(action_id: str) -> tuple[int, str]:
        feedback = profile.action_feedback[action_id]
        return (feedback.accepted + feedback.converted + len(feedback.declines), action_id)

    return order


def bound_cases(profile: Profile, config: EngineConfig) -> None:
    """Keep every open case and only the latest resolved ones."""
    resolved = [case for case in profile.cases.values() if case.resolved_at is not None]
    resolved.sort(key=lambda case: (case.resolved_at, case.case_id))
    for case in resolved[: max(0, len(resolved) - config.resolved_cases_kept)]:
        del profile.cases[case.case_id]


def _apply_feedback(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, FeedbackAttributes)
    record = FeedbackRecord(
        event_id=event.event_id,
        at=event.occurred_at,
        touchpoint=event.touchpoint,
        channel=_channel(event),
        score=attributes.score,
    )
    _insert_latest(profile.feedback, record, config.feedback_capacity)


def _later(stamp_at: datetime, stamp_id: str, than_at: datetime, than_id: str) -> bool:
    return (stamp_at, stamp_id) > (than_at, than_id)


def _apply_preference(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, PreferenceAttributes)
    current = profile.stated.get(attributes.key)
    if current and not _later(
        event.occurred_at, event.event_id, current.stated_at, current.event_id
    ):
        return
    profile.stated[attributes.key] = StatedPreference(
        value=attributes.value,
        source=attributes.source or event.touchpoint,
        stated_at=event.occurred_at,
        event_id=event.event_id,
    )


def _apply_consent(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, ConsentAttributes)
    channel = attributes.channel.value if attributes.channel else None
    if attributes.purpose is Purpose.PROFILING and attributes.status is not ConsentStatus.GRANTED:
        _forget_learning(profile, event.occurred_at)
    key = consent_key(attributes.purpose, channel)
    current = profile.consents.get(key)
    if current and not _later(
        event.occurred_at, event.event_id, current.changed_at, current.event_id
    ):
        return
    profile.consents[key] = ConsentRecord(
        purpose=attributes.purpose,
        channel=channel or "*",
        status=attributes.status,
        source=attributes.source or event.touchpoint,
        changed_at=event.occurred_at,
        event_id=event.event_id,
    )


def _forget_learning(profile: Profile, revoked_at: datetime) -> None:
    """Profiling was refused: keep nothing learned implicitly (stated and service data stay)."""
    if profile.profiling_revoked_at is None or revoked_at > profile.profiling_revoked_at:
        profile.profiling_revoked_at = revoked_at
    profile.channel_usage.clear()
    profile.contact_channels.clear()
    profile.request_channels.clear()
    profile.habits.clear()
    profile.default_feedback.clear()


def _apply_outcome(profile: Profile, event: Event, config: EngineConfig) -> None:
    attributes = event.typed
    assert isinstance(attributes, OutcomeAttributes)
    if attributes.kind == "action":
        _apply_action_outcome(profile, event, attributes, config)
        return
    if attributes.outcome not in (OutcomeKind.ACCEPTED, OutcomeKind.DECLINED):
        return
    if not (attributes.request and attributes.habit_channel and attributes.signature is not None):
        return
    if not may_learn_from(profile, event.occurred_at, config):
        return
    key = habit_key(attributes.request, attributes.habit_channel.value)
    by_signature = profile.default_feedback.setdefault(key, {})
    feedback = by_signature.setdefault(attributes.signature, DefaultFeedback())
    when = event.occurred_at
    if attributes.outcome is OutcomeKind.ACCEPTED:
        feedback.accepted += 1
        if feedback.last_accepted_at is None or when > feedback.last_accepted_at:
            feedback.last_accepted_at = when
    else:
        decline = Stamp(at=when, event_id=event.event_id)
        _insert_latest(feedback.declines, decline, 2 * config.default_max_declines)
    if feedback.last_at is None or when > feedback.last_at:
        feedback.last_at = when
    _evict_stalest(by_signature, config.signatures_per_habit, _feedback_last_at)
    _evict_stalest(profile.default_feedback, config.max_habit_keys, _latest_feedback)


def _feedback_last_at(feedback: DefaultFeedback) -> datetime:
    assert feedback.last_at is not None
    return feedback.last_at


def _latest_feedback(by_signature: dict[str, DefaultFeedback]) -> datetime:
    return max(_feedback_last_at(feedback) for feedback in by_signature.values())


_APPLIERS: dict[EventType, Callable[[Profile, Event, EngineConfig], None]] = {
    EventType.REQUEST: _apply_request,
    EventType.CONTACT: _apply_contact,
    EventType.COMPLAINT_OPENED: _apply_complaint_opened,
    EventType.COMPLAINT_RESOLVED: _apply_complaint_resolved,
    EventType.FEEDBACK: _apply_feedback,
    EventType.PREFERENCE_STATED: _apply_preference,
    EventType.CONSENT_CHANGED: _apply_consent,
    EventType.OUTCOME: _apply_outcome,
    EventType.INCIDENT_OPENED: _apply_incident_opened,
    EventType.INCIDENT_RESOLVED: _apply_complaint_resolved,
    EventType.ACTION_EXPOSED: _apply_exposure,
}
