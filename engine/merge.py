"""Merging two customers found to be one person: their profiles combine through the fold.

`merge(a, b)` equals the profile of both histories folded together, (floats up to rounding,
within the profile's bounds), and is commutative and associative, so the order in which
identities get linked never matters. Property-tested in tests/engine/test_merge.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from engine.config import EngineConfig
from engine.consent import may_learn_from
from engine.fold import bound_cases
from engine.preferences import ConsentRecord, StatedPreference
from engine.profile import (
    ActionFeedback,
    CaseRecord,
    DecayedCount,
    DefaultFeedback,
    Profile,
    RequestRecord,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

K = TypeVar("K")
V = TypeVar("V")


def merge(a: Profile, b: Profile, *, customer_id: str, config: EngineConfig) -> Profile:
    """The profile of `a`'s and `b`'s histories together, as customer `customer_id`."""
    half_life = config.channel_half_life_days

    def counts(x: dict[str, DecayedCount], y: dict[str, DecayedCount]) -> dict[str, DecayedCount]:
        return _union(x, y, lambda p, q: p.merged(q, half_life))

    request_channels = _union(a.request_channels, b.request_channels, counts)
    habits = _union(a.habits, b.habits, lambda x, y: _latest(x + y, config.habit_window))
    feedback = _union(
        a.default_feedback,
        b.default_feedback,
        lambda x, y: _union(x, y, lambda p, q: _merge_feedback(p, q, config)),
    )
    revoked = _max_time(a.profiling_revoked_at, b.profiling_revoked_at)
    merged = Profile(
        customer_id=customer_id,
        event_count=a.event_count + b.event_count,
        first_seen=_min_time(a.first_seen, b.first_seen),
        last_seen=_max_time(a.last_seen, b.last_seen),
        seen=sorted(set(a.seen) | set(b.seen))[-config.seen_capacity :],
        channel_usage=counts(a.channel_usage, b.channel_usage),
        contact_channels=counts(a.contact_channels, b.contact_channels),
        request_channels=_keep_freshest(
            request_channels, config.max_request_kinds, _latest_count_at
        ),
        habits=_keep_freshest(habits, config.max_habit_keys, lambda rs: rs[-1].at),
        default_feedback=feedback,
        stated=_union(a.stated, b.stated, _later_statement),
        consents=_union(a.consents, b.consents, _later_consent),
        profiling_revoked_at=revoked,
        cases=_union(a.cases, b.cases, _merge_case),
        feedback=sorted(a.feedback + b.feedback, key=lambda f: (f.at, f.event_id))[
            -config.feedback_capacity :
        ],
        exposures=sorted(a.exposures + b.exposures, key=lambda x: (x.at, x.event_id))[
            -config.exposures_kept :
        ],
        action_feedback=_union(
            a.action_feedback, b.action_feedback, lambda p, q: _merge_action(p, q, config)
        ),
    )
    bound_cases(merged, config)
    refused = revoked is not None and a.profiling_revoked_at != b.profiling_revoked_at
    if refused or not may_learn_from(merged, merged.last_seen or _EPOCH, config):
        # A refusal on one side covers what the other side learned: forget, as the fold would.
        for learned in (
            merged.channel_usage,
            merged.contact_channels,
            merged.request_channels,
            merged.habits,
            merged.default_feedback,
        ):
            learned.clear()
    return merged


def _union(x: dict[K, V], y: dict[K, V], combine: Callable[[V, V], V]) -> dict[K, V]:
    merged = dict(x)
    for key, value in y.items():
        merged[key] = combine(merged[key], value) if key in merged else value
    return merged


def _latest(records: list[RequestRecord], limit: int) -> list[RequestRecord]:
    unique = {record.event_id: record for record in records}
    return sorted(unique.values(), key=lambda r: (r.at, r.event_id))[-limit:]


def _keep_freshest(
    mapping: dict[str, V], limit: int, latest: Callable[[V], datetime]
) -> dict[str, V]:
    keep = sorted(mapping, key=lambda key: (latest(mapping[key]), key))[-limit:]
    return {key: mapping[key] for key in sorted(keep)}


def _latest_count_at(counts: dict[str, DecayedCount]) -> datetime:
    return max(count.at for count in counts.values() if count.at is not None)


def _merge_feedback(
    a: DefaultFeedback, b: DefaultFeedback, config: EngineConfig
) -> DefaultFeedback:
    declines = {(s.at, s.event_id): s for s in a.declines + b.declines}
    return DefaultFeedback(
        accepted=a.accepted + b.accepted,
        last_accepted_at=_max_time(a.last_accepted_at, b.last_accepted_at),
        declines=[declines[k] for k in sorted(declines)][-2 * config.default_max_declines :],
        last_at=_max_time(a.last_at, b.last_at),
    )


def _merge_action(a: ActionFeedback, b: ActionFeedback, config: EngineConfig) -> ActionFeedback:
    declines = {(s.at, s.event_id): s for s in a.declines + b.declines}
    return ActionFeedback(
        accepted=a.accepted + b.accepted,
        converted=a.converted + b.converted,
        converted_value=a.converted_value + b.converted_value,
        declines=[declines[k] for k in sorted(declines)][-config.action_declines_kept :],
    )


def _later_statement(a: StatedPreference, b: StatedPreference) -> StatedPreference:
    return max(a, b, key=lambda s: (s.stated_at, s.event_id))


def _later_consent(a: ConsentRecord, b: ConsentRecord) -> ConsentRecord:
    return max(a, b, key=lambda c: (c.changed_at, c.event_id))


def _merge_case(a: CaseRecord, b: CaseRecord) -> CaseRecord:
    opened = min(
        (c for c in (a, b) if c.opened_at is not None),
        key=lambda c: c.opened_at,  # type: ignore[arg-type, return-value]
        default=a,
    )
    return CaseRecord(
        case_id=a.case_id,
        kind=opened.kind,
        opened_at=opened.opened_at,
        resolved_at=_max_time(a.resolved_at, b.resolved_at),
        topic=opened.topic,
        channel=opened.channel,
    )


def _min_time(a: datetime | None, b: datetime | None) -> datetime | None:
    return min((t for t in (a, b) if t is not None), default=None)


def _max_time(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)
