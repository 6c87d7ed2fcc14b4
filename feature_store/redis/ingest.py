"""How the Redis store applies a batch of events: read, fold and commit, a batch at a time.

Per-customer updates are optimistic, so the fold stays in Python (`engine.fold`) and each
customer's update is still one atomic, single-slot script:

1. one pipelined round trip (one per node on a cluster, in parallel) runs `READ_FOR_UPDATE`
   for every customer of the batch: the stored profile, which of its event ids are within the
   dedup window, its alias and pending merges;
2. the client folds each customer's new events into its profile (a second round trip checks
   the erasure records, only for customers that have no profile);
3. one pipelined round trip runs `COMMIT` for every customer with something to log: all or
   nothing per customer, if the stored profile is still the one read (its SHA-1 is the
   version: no version field to store, and equal bytes are the same fold input), the ids are
   still new and the customer is neither merged nor being merged into. It writes the profile,
   appends the logged events to the customer's list and to the event log (its slot's shard,
   `feature_store.redis.log`) and records their ids in the dedup window.
   A customer whose commit lost (another writer committed first) is read again, with the
   others that lost, after a short jittered backoff; the winners are done.

A customer merged into another is followed to the survivor (its alias), and a pending merge
into it is settled first (`feature_store.redis.identity`). After `max_commit_attempts` rounds
the customers still losing raise `StoreUnavailable` (the API answers 503 and the touchpoint
retries the batch: what was committed reads DUPLICATE, nothing accepted is lost).

The population counters are incremented once per batch, after the commits, by one more
script (they live on another slot): approximate by design (`feature_store.redis.store`).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.channel_preference import population_dimensions
from engine.config import EngineConfig
from engine.events import Event
from engine.fold import FoldStatus, apply_in_place, new_profile
from engine.identity import customer_digest
from engine.profile import Profile
from feature_store.base import AppendStatus
from feature_store.errors import StoreError, StoreUnavailable
from feature_store.keys import population_field
from feature_store.redis.codec import (
    as_bytes,
    decode_profile,
    encode_log_entry,
    encode_profile,
    profile_version,
)
from feature_store.redis.connection import Command, ScriptCall, pipelined
from feature_store.redis.identity import MAX_ALIAS_HOPS, RedisAccess, RedisIdentities
from feature_store.redis.privacy import RedisPrivacy

logger = logging.getLogger(__name__)

_APPEND_STATUS = {
    FoldStatus.APPLIED: AppendStatus.ACCEPTED,
    FoldStatus.DUPLICATE: AppendStatus.DUPLICATE,
    FoldStatus.TOO_LATE: AppendStatus.TOO_LATE,
}
#: Backoff between optimistic commit rounds, in seconds: uniform in [0, min(cap, base*2^n)].
_CONFLICT_BACKOFF_BASE = 0.002
_CONFLICT_BACKOFF_CAP = 0.05
#: Retry-after hint, in seconds, when other writers of a customer kept winning.
_RETRY_AFTER_CONTENTION = 1.0


@dataclass(frozen=True, slots=True)
class Stored:
    """One customer's state as `READ_FOR_UPDATE` returns it."""

    profile: bytes | None
    known: set[str]  # ids of the batch within the dedup window
    alias: str | None  # the customer it was merged into
    pending: list[str]  # customers being merged into it


@dataclass(frozen=True, slots=True)
class Update:
    """What one customer's batch does to the stored state, as folded by the client."""

    statuses: list[AppendStatus]
    profile: Profile | None  # None: the profile is unchanged
    logged: list[int]  # positions in the customer's batch of the events to log, in order
    applied: list[Event]


@dataclass(slots=True)
class CustomerBatch:
    """The events of one customer in a batch, and where they are in the batch."""

    customer_id: str  # whom they go to now (the survivor, once an alias was followed)
    positions: list[int]
    events: list[Event]
    entries: list[bytes] = field(default_factory=list)  # the events as log entries
    hops: int = 0

    @property
    def event_ids(self) -> list[str]:
        return list(dict.fromkeys(event.event_id for event in self.events))

    def follow(self, survivor: str) -> None:
        self.hops += 1
        if self.hops > MAX_ALIAS_HOPS:
            raise StoreError(f"more than {MAX_ALIAS_HOPS} merges lead from a customer")
        self.customer_id = survivor
        self.events = [e.model_copy(update={"customer_id": survivor}) for e in self.events]


class RedisIngest:
    """The batch writer of `RedisStore` (see the module docstring)."""

    def __init__(
        self, access: RedisAccess, identities: RedisIdentities, privacy: RedisPrivacy
    ) -> None:
        self.access = access
        self.keys = access.keys
        self.identities = identities
        self.privacy = privacy
        self._rng = random.Random()

    def apply(self, events: Sequence[Event]) -> list[AppendStatus]:
        """See `OnlineStore.apply_events`."""
        batches: dict[str, CustomerBatch] = {}
        for position, event in enumerate(events):
            batch = batches.get(event.customer_id)
            if batch is None:
                batch = batches[event.customer_id] = CustomerBatch(event.customer_id, [], [])
            batch.positions.append(position)
            batch.events.append(event)
            # Serialised once, outside the retry loop, to keep each round short.
            batch.entries.append(encode_log_entry(event))
        statuses: list[AppendStatus | None] = [None] * len(events)
        applied: list[Event] = []
        try:
            self._apply_batches(list(batches.values()), statuses, applied)
        finally:
            self.count_population(applied)
        return [status or AppendStatus.DUPLICATE for status in statuses]

    def _apply_batches(
        self,
        todo: list[CustomerBatch],
        statuses: list[AppendStatus | None],
        applied: list[Event],
    ) -> None:
        conflicts = 0
        while todo:
            if conflicts >= self.access.redis_config.max_commit_attempts:
                raise StoreUnavailable(
                    "too many concurrent updates of one customer; retry later",
                    retry_after=_RETRY_AFTER_CONTENTION,
                )
            results, losers = self.attempt(todo)
            for batch, update in results:
                for position, status in zip(batch.positions, update.statuses, strict=True):
                    statuses[position] = status
                applied += update.applied
            todo = losers
            if todo:
                delay = min(_CONFLICT_BACKOFF_CAP, _CONFLICT_BACKOFF_BASE * 2**conflicts)
                time.sleep(self._rng.uniform(0, delay))
                conflicts += 1

    def attempt(
        self, batches: list[CustomerBatch]
    ) -> tuple[list[tuple[CustomerBatch, Update]], list[CustomerBatch]]:
        """One read-fold-commit round of `batches`: the customers done, with what their update
        did, and those to try again (a conflict, an alias followed or a merge settled)."""
        stored = self.read([(batch.customer_id, batch.event_ids) for batch in batches])
        done: list[tuple[CustomerBatch, Update]] = []
        again: list[CustomerBatch] = []
        fresh = [b for b, s in zip(batches, stored, strict=True) if _is_new(s)]
        erased = self._erased({b.customer_id for b in fresh})
        commits: list[tuple[CustomerBatch, Stored, Update]] = []
        for batch, state in zip(batches, stored, strict=True):
            if state.alias is not None:  # merged into another customer: theirs now
                batch.follow(state.alias)
                again.append(batch)
            elif state.pending:  # a merge into the customer is under way, or was interrupted
                self.identities.settle(batch.customer_id)
                again.append(batch)
            elif state.profile is None and batch.customer_id in erased:
                done.append(
                    (batch, Update([AppendStatus.ERASED] * len(batch.events), None, [], []))
                )
            else:
                profile = None if state.profile is None else decode_profile(state.profile)
                update = fold_new_events(profile, batch.events, state.known, self.access.config)
                if update.logged:
                    commits.append((batch, state, update))
                else:
                    done.append((batch, update))
        committed = self.commit([(b, s.profile, u) for b, s, u in commits])
        created: list[tuple[CustomerBatch, Update]] = []
        for (batch, state, update), ok in zip(commits, committed, strict=True):
            if not ok:
                again.append(batch)
            elif state.profile is None:
                created.append((batch, update))
            else:
                done.append((batch, update))
        done += self._erased_meanwhile(created)
        return done, again

    def read(self, wanted: Sequence[tuple[str, list[str]]]) -> list[Stored]:
        """`READ_FOR_UPDATE` of each (customer, event ids), in one pipelined round trip."""
        script = self.access.script("READ_FOR_UPDATE")
        calls: list[ScriptCall | Command] = []
        for customer_id, event_ids in wanted:
            keys = self.keys.customer(customer_id)
            script_keys = [keys.profile, keys.dedup, keys.alias, keys.pending]
            calls.append(ScriptCall(script, script_keys, event_ids))
        replies = pipelined(self.access.client(), calls)
        stored = []
        for (_, ids), (profile, flags, alias, pending) in zip(wanted, replies, strict=True):
            stored.append(
                Stored(
                    profile=profile,
                    known={event_id for event_id, flag in zip(ids, flags, strict=True) if flag},
                    alias=None if alias is None else as_bytes(alias).decode(),
                    pending=[as_bytes(member).decode() for member in pending],
                )
            )
        return stored

    def commit(self, updates: Sequence[tuple[CustomerBatch, bytes | None, Update]]) -> list[bool]:
        """`COMMIT` of every update, conditioned on the profile it was folded from, in one
        pipelined round trip; True for each customer committed."""
        if not updates:
            return []
        script = self.access.script("COMMIT")
        config = self.access.redis_config
        window_ms = max(1, round(config.dedup_window_seconds * 1000))
        calls: list[ScriptCall | Command] = []
        for batch, stored, update in updates:
            keys = self.keys.customer(batch.customer_id)
            shard = self.keys.customer_log_shard(batch.customer_id)
            profile = (
                b""
                if update.profile is None
                else encode_profile(update.profile, config.compress_min_bytes)
            )
            args: list[str | bytes | int] = [
                profile_version(stored),
                profile,
                window_ms,
                config.event_log_cap,
                batch.customer_id,
            ]
            for position in update.logged:
                event_id = batch.events[position].event_id
                args += [event_id, batch.entries[position], update.statuses[position].value]
            script_keys = [keys.profile, keys.events, keys.dedup, keys.alias, keys.pending]
            script_keys += [keys.event_log, shard.events, shard.counters]
            calls.append(ScriptCall(script, script_keys, args))
        return [bool(reply) for reply in pipelined(self.access.client(), calls)]

    def _erased(self, customers: set[str]) -> set[str]:
        """Those of `customers` in the erasure records (one pipelined round trip, if any)."""
        if not customers:
            return set()
        ordered = sorted(customers)
        calls: list[ScriptCall | Command] = []
        for customer in ordered:
            digest = customer_digest(customer)
            calls.append(("HEXISTS", self.keys.erasures(digest), digest))
        replies = pipelined(self.access.client(), calls)
        return {customer for customer, found in zip(ordered, replies, strict=True) if found}

    def _erased_meanwhile(
        self, created: list[tuple[CustomerBatch, Update]]
    ) -> list[tuple[CustomerBatch, Update]]:
        # A customer erased between this writer's check and its commit: the one window an
        # erasure cannot close by itself (feature_store.redis.privacy), so erase it again.
        erased = self._erased({batch.customer_id for batch, _ in created})
        results = []
        for batch, update in created:
            if batch.customer_id in erased:
                self.privacy.erase(batch.customer_id)
                update = Update([AppendStatus.ERASED] * len(update.statuses), None, [], [])
            results.append((batch, update))
        return results

    def count_population(self, applied: list[Event]) -> None:
        counts = Counter(
            population_field(dimension, channel)
            for event in applied
            for dimension, channel in population_dimensions(event)
        )
        if not counts:
            return
        args: list[str | int] = [item for pair in sorted(counts.items()) for item in pair]
        try:
            self.access.run("COUNT_POPULATION", [self.keys.population()], args)
        except StoreError:
            # The events are committed: reporting a failure would make the client resend them
            # only to hear DUPLICATE. The counters are approximate by design.
            logger.warning("population counters not updated", exc_info=True)


def _is_new(stored: Stored) -> bool:
    return stored.profile is None and stored.alias is None and not stored.pending


def fold_new_events(
    profile: Profile | None, events: list[Event], known: set[str], config: EngineConfig
) -> Update:
    """Fold the events whose ids are neither `known` nor repeated earlier in the batch.

    `profile` is changed in place (callers pass a freshly decoded one, or None).
    """
    statuses = [AppendStatus.DUPLICATE] * len(events)
    seen = set(known)
    fresh: list[int] = []
    # A repeated id inside the batch is folded once: the fold's own check keys on
    # (occurred_at, id) and would apply a resent event whose time differs.
    for position, event in enumerate(events):
        if event.event_id not in seen:
            seen.add(event.event_id)
            fresh.append(position)
    if not fresh:
        return Update(statuses, None, [], [])
    # `profile` was just decoded and is ours to change: folding in place spares the deep copy
    # that `engine.fold.fold` makes, the largest cost of an update with a long ring of ids.
    folded = profile if profile is not None else new_profile(events[fresh[0]].customer_id)
    for position in fresh:
        # Ids were checked against the dedup window, so events older than the profile's ring
        # are new too (a resend later than the window is the documented client error).
        status = apply_in_place(folded, events[position], config, known_new=True)
        statuses[position] = _APPEND_STATUS[status]
    applied = [events[p] for p in fresh if statuses[p] is AppendStatus.ACCEPTED]
    # TOO_LATE events are logged though not folded; the fold's DUPLICATEs are not.
    logged = [p for p in fresh if statuses[p] is not AppendStatus.DUPLICATE]
    return Update(statuses, folded if applied else None, logged, applied)
