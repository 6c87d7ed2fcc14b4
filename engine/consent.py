"""Consent: may we contact this customer, here, for this purpose; may we learn from them.

A consent statement covers one purpose and either one channel or every channel (no channel).
For a purpose and channel, the latest statement covering it wins; with none, the default of
`EngineConfig.default_consent` applies (service and profiling granted, marketing denied).

Profiling consent governs implicit learning (see engine/fold.py): when it is denied or
revoked, everything learned implicitly is wiped and nothing is learned from events until a
new grant, and then only from events after that grant.
"""

from __future__ import annotations

from datetime import datetime

from engine.config import EngineConfig
from engine.preferences import ConsentRecord, ConsentStatus, Purpose
from engine.profile import Profile

ALL_CHANNELS = "*"


def consent_key(purpose: Purpose, channel: str | None) -> str:
    return f"{purpose.value}:{channel or ALL_CHANNELS}"


def _latest(records: list[ConsentRecord | None]) -> ConsentRecord | None:
    present = [record for record in records if record is not None]
    return max(present, key=_statement_order, default=None)


def _statement_order(record: ConsentRecord) -> tuple[datetime, str]:
    return record.changed_at, record.event_id


def consent_status(
    profile: Profile | None, purpose: Purpose, channel: str | None, config: EngineConfig
) -> ConsentStatus:
    """The status in force for `purpose` on `channel` (None: the purpose as a whole)."""
    if profile is not None and profile.consents:
        record = _latest(
            [
                profile.consents.get(consent_key(purpose, channel)),
                profile.consents.get(consent_key(purpose, None)),
            ]
        )
        if record is not None:
            return record.status
    return config.default_consent[purpose]


def may_contact(
    profile: Profile | None, purpose: Purpose, channel: str, config: EngineConfig
) -> bool:
    return consent_status(profile, purpose, channel, config) is ConsentStatus.GRANTED


def current_profiling(profile: Profile) -> ConsentRecord | None:
    """The latest profiling statement, whatever channel it names."""
    # A plain loop: the fold asks on every event it learns from, and building a list or a
    # generator for `_latest` cost more than the rest of the question.
    latest = None
    for record in profile.consents.values():
        if record.purpose is _PROFILING and (
            latest is None or _statement_order(record) > _statement_order(latest)
        ):
            latest = record
    return latest


def may_learn_from(profile: Profile, occurred_at: datetime, config: EngineConfig) -> bool:
    """Whether an event at `occurred_at` may feed implicit learning, given current consent."""
    record = current_profiling(profile) if profile.consents else None  # most state none
    if record is None:
        return config.default_consent[_PROFILING] is _GRANTED
    if record.status is not _GRANTED:
        return False
    explicit_grant_needed = (
        profile.profiling_revoked_at is not None
        or config.default_consent[_PROFILING] is not _GRANTED
    )
    return occurred_at >= record.changed_at if explicit_grant_needed else True


# Python 3.11 looks enum members up through a descriptor, at 0.1 µs each (3.12 no longer
# does): the members the fold compares on every event are bound once.
_PROFILING = Purpose.PROFILING
_GRANTED = ConsentStatus.GRANTED
