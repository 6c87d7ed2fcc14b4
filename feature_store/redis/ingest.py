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
from engine.fold import apply_in_place, new_profile
from engine.identity import customer_digest
from engine.profile import Profile
from feature_store.base import APPEND_STATUS, AppendStatus
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

    def apply(self, events: Sequence[Event], *, count: bool = True) -> list[AppendStatus]:
        """See `OnlineStore.apply_events`. `count`: whether to add the events folded to the
        population counters (False when the caller has counted them already)."""
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
        done: list[tuple[CustomerBatch, Update]] = []
        created: list[tuple[CustomerBatch, Update]] = []
        try:
            self._apply_batches(list(batches.values()), done, created)
        finally:
            # Even if a later round failed: what was committed is counted and checked.
            done += self._after_commits(created, done, count=count)
        for batch, update in done:
            for position, status in zip(batch.positions, update.statuses, strict=True):
                statuses[position] = status
        return [status or AppendStatus.DUPLICATE for status in statuses]

    def _apply_batches(
        self,
        todo: list[CustomerBatch],
        done: list[tuple[CustomerBatch, Update]],
        created: list[tuple[CustomerBatch, Update]],
    ) -> None:
        """Rounds of `attempt` until every customer is done (into `done`, or `created` for
        those whose commit created their profile), or `max_commit_attempts` rounds."""
        rounds = 0
        while todo:
            if rounds >= self.access.redis_config.max_commit_attempts:
                raise StoreUnavailable(
                    "too many concurrent updates of one customer; retry later",
                    retry_after=_RETRY_AFTER_CONTENTION,
                )
            todo = self.attempt(todo, done, created)
            if todo:
                delay = min(_CONFLICT_BACKOFF_CAP, _CONFLICT_BACKOFF_BASE * 2**rounds)
                time.sleep(self._rng.uniform(0, delay))
                rounds += 1

    def attempt(
        self,
        batches: list[CustomerBatch],
        done: list[tuple[CustomerBatch, Update]],
        created: list[tuple[CustomerBatch, Update]],
    ) -> list[CustomerBatch]:
        """One read-fold-commit round of `batches`: adds the customers done, with what their
        update did, to `done` (or `created`, if their commit created their profile); returns
        those to try again (a conflict, an alias followed or a merge settled)."""
        stored = self.read([(batch.customer_id, batch.event_ids) for batch in batches])
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
        for (batch, state, update), ok in zip(commits, committed, strict=True):
            if not ok:
                again.append(batch)
            elif state.profile is None:
                created.append((batch, update))
            else:
                done.append((batch, update))
        return again

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
        calls: list[ScriptCall | Command] = [
            self.commit_call(batch, stored, update) for batch, stored, update in updates
        ]
        shards = {self.keys.customer_log_shard(batch.customer_id) for batch, _, _ in updates}
        retention = [retention_call(self.access, shard.events) for shard in shards]
        replies = pipelined(self.access.client(), [*calls, *filter(None, retention)])
        return [bool(reply) for reply in replies[: len(calls)]]

    def commit_call(self, batch: CustomerBatch, stored: bytes | None, update: Update) -> ScriptCall:
        """The `COMMIT` of one customer's update, folded from the profile `stored`."""
        config = self.access.redis_config
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
            max(1, round(config.dedup_window_seconds * 1000)),
            config.event_log_cap,
            batch.customer_id,
        ]
        entries = batch.entries or [encode_log_entry(event) for event in batch.events]
        for position in update.logged:
            event_id = batch.events[position].event_id
            args += [event_id, entries[position], update.statuses[position].value]
        script_keys = [keys.profile, keys.events, keys.dedup, keys.alias, keys.pending]
        script_keys += [keys.event_log, shard.events, shard.counters]
        return ScriptCall(self.access.script("COMMIT"), script_keys, args)

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

    def _after_commits(
        self,
        created: list[tuple[CustomerBatch, Update]],
        done: list[tuple[CustomerBatch, Update]],
        *,
        count: bool,
    ) -> list[tuple[CustomerBatch, Update]]:
        """One round trip after the commits: check the erasure records again for the customers
        whose profile the batch created, and add what `done` and `created` folded to the
        population counters (if `count`). Returns `created`, with ERASED for the customers
        erased meanwhile (erased again: the one window an erasure cannot close by itself, see
        `feature_store.redis.privacy`). A customer erased meanwhile is counted in the
        population all the same: the counters are approximate (`feature_store.redis.store`)."""
        ordered = [batch.customer_id for batch, _ in created]
        calls: list[ScriptCall | Command] = []
        for customer in ordered:
            digest = customer_digest(customer)
            calls.append(("HEXISTS", self.keys.erasures(digest), digest))
        folded = [event for _, update in [*done, *created] for event in update.applied]
        counts = population_counts(folded) if count else Counter()
        if counts:
            calls.append(self.population_call(counts))
        try:
            replies = pipelined(self.access.client(), calls) if calls else []
        except StoreError:
            if not created:
                # The events are committed: reporting a failure would make the client resend
                # them only to hear DUPLICATE. The counters are approximate by design.
                logger.warning("population counters not updated", exc_info=True)
                return []
            raise
        results = []
        for (batch, update), erased in zip(created, replies, strict=False):
            if erased:
                self.privacy.erase(batch.customer_id)
                update = Update([AppendStatus.ERASED] * len(update.statuses), None, [], [])
            results.append((batch, update))
        return results

    def population_call(self, counts: Counter[str]) -> ScriptCall:
        """`COUNT_POPULATION` of counter increments (field -> increment)."""
        args: list[str | bytes | int] = [item for pair in sorted(counts.items()) for item in pair]
        script = self.access.script("COUNT_POPULATION")
        return ScriptCall(script, [self.keys.population()], args)


def retention_call(access: RedisAccess, stream: str) -> Command | None:
    """The trim of a log shard's stream to `log_retention_entries`, if that is set."""
    retention = access.redis_config.log_retention_entries
    return None if retention is None else ("XTRIM", stream, "MAXLEN", "~", retention)


def population_counts(applied: list[Event]) -> Counter[str]:
    return Counter(
        population_field(dimension, channel)
        for event in applied
        for dimension, channel in population_dimensions(event)
    )


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
        statuses[position] = APPEND_STATUS[status]
    applied = [events[p] for p in fresh if statuses[p] is AppendStatus.ACCEPTED]
    # TOO_LATE events are logged though not folded; the fold's DUPLICATEs are not.
    logged = [p for p in fresh if statuses[p] is not AppendStatus.DUPLICATE]
    return Update(statuses, folded if applied else None, logged, applied)
