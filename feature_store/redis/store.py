"""The production online store: Redis, standalone (`redis://`) or Redis Cluster (`redis+cluster://`).

Key layout: `feature_store.keys`; encodings: `feature_store.redis.codec`; scripts:
`feature_store.redis.scripts`; the event and decision logs that `read_log` reads:
`feature_store.redis.log`. Needs Redis 7.0 or newer.

Per-customer updates are optimistic, so the fold stays in Python (`engine.fold`) and each
update is still one atomic, single-slot operation:

1. one script reads the customer's stored profile and which of the batch's event ids are
   within the dedup window;
2. the client folds the new events into that profile;
3. one script commits, all or nothing, if the stored profile is still the one read (its
   SHA-1 is the version: no version field to store, and equal bytes are the same fold input),
   the ids are still new and the customer is neither merged nor being merged into: it writes
   the profile, appends the logged events to the customer's list and to the event log (its
   slot's shard, `feature_store.redis.log`) and records their ids in the dedup window.
   Otherwise nothing is written: another writer of this customer committed first, and the
   client reads again after a short jittered backoff.

A customer merged into another (`link_identities`) has an alias in its slot: the read script
returns it and the update goes to the survivor; `read_profile` and `customer_events` look for
the alias only when the customer has nothing of its own, so a known customer's read stays one
GET. An update checks the erasure records only when the customer has no profile (see
`feature_store.redis.privacy` for why that is enough; merges: `feature_store.redis.identity`).

After `max_commit_attempts` conflicts it raises `StoreUnavailable` (the API answers 503 and the
touchpoint retries; nothing accepted is lost). Writers of one customer within one process take
turns on a local lock, so conflicts only arise between processes. Scripts only touch keys of
one hash tag, so they behave the same on one server and on a cluster.

Idempotence is by event id within `dedup_window_seconds` (default 7 days) of the id's
acceptance, on the server's clock. After the window the profile's own ring of recent event ids
(`EngineConfig.seen_capacity`) still answers DUPLICATE to an exact resend (same id and
`occurred_at`) while the event is among the customer's latest ones; a late resend with another
`occurred_at` would be folded again. Clients must not retry for longer than the window.

What the online store keeps, and what it does not:

* the customer's list of events (`customer_events`) holds their latest `event_log_cap` events
  (default 1,000), in order of acceptance;
* the event and decision logs (`read_log`, for the offline export) hold every entry until its
  customer is erased: they are not trimmed yet (see `feature_store.redis.log`);
* a decision stays readable (`read_decision`) for `decision_ttl_seconds` (default 90 days):
  an outcome reported later refers to an unknown decision. It is indexed under its customer
  (for export and erasure) when the store holds anything of that customer; a decision for an
  id the store knows nothing of (an anonymous one, say) is not indexed and only expires (the
  decision log keeps every decision, indexed or not, until its customer is erased);
* the population counters are incremented after the customer's commit, by a second command
  (they live on another slot). They are approximate: a failure between the two, or a commit
  whose reply was lost, leaves some events uncounted. They feed a prior, not a ledger.

Unreachable servers: sockets time out after `socket_timeout_seconds`, connection errors are
retried `retries` times with jittered exponential backoff, then the call raises
`StoreUnavailable`. Connections are pooled and re-established by later calls, so a store
recovers by itself when Redis is back. No method talks to Redis before its first call.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from redis.cluster import RedisCluster
from redis.commands.core import Script

from engine.channel_preference import ChannelPrior, population_dimensions
from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.fold import FoldStatus, apply_in_place, new_profile
from engine.identity import HashedIdentity
from engine.profile import Profile
from feature_store.base import (
    AppendStatus,
    CustomerExport,
    IdentityLink,
    LogPage,
    LogTable,
    OnlineStore,
)
from feature_store.errors import DuplicateDecision, StoreError, StoreUnavailable
from feature_store.keys import (
    KeyLayout,
    population_field,
    split_population_field,
)
from feature_store.redis import scripts as redis_scripts
from feature_store.redis.codec import (
    as_bytes,
    decode_document,
    decode_log_entry,
    decode_profile,
    encode_document,
    encode_log_entry,
    profile_version,
)
from feature_store.redis.config import RedisStoreConfig
from feature_store.redis.connection import (
    RETRY_AFTER_UNREACHABLE,
    RedisClient,
    connect,
    translated_errors,
)
from feature_store.redis.identity import MAX_ALIAS_HOPS, RedisAccess, RedisIdentities
from feature_store.redis.log import RedisLog
from feature_store.redis.privacy import RedisPrivacy

logger = logging.getLogger(__name__)

_DAY = 86_400
_APPEND_STATUS = {
    FoldStatus.APPLIED: AppendStatus.ACCEPTED,
    FoldStatus.DUPLICATE: AppendStatus.DUPLICATE,
    FoldStatus.TOO_LATE: AppendStatus.TOO_LATE,
}
#: Backoff between optimistic commit attempts, in seconds: uniform in [0, min(cap, base*2^n)].
_CONFLICT_BACKOFF_BASE = 0.002
_CONFLICT_BACKOFF_CAP = 0.05
#: Retry-after hint, in seconds, when other writers of the customer kept winning.
_RETRY_AFTER_CONTENTION = 1.0
#: Locks that writers of one customer in one process take turns on (customers share stripes).
_CUSTOMER_TURN_STRIPES = 64


@dataclass(frozen=True, slots=True)
class _Stored:
    """One customer's state as the read script returns it, for an update."""

    profile: bytes | None
    known: set[str]  # ids of the batch within the dedup window
    alias: str | None  # the customer it was merged into
    pending: list[str]  # customers being merged into it


@dataclass(frozen=True, slots=True)
class _Update:
    """What one customer's batch does to the stored state, as folded by the client."""

    statuses: list[AppendStatus]
    profile: Profile | None  # None: the profile is unchanged
    logged: list[int]  # positions in the batch of the events to log, in order
    applied: list[Event]


class RedisStore(OnlineStore):
    """`OnlineStore` on Redis or Redis Cluster (see the module docstring for the guarantees).

    `population_prior()` is cached in the instance for `prior_ttl_seconds` (monotonic clock);
    a TTL of 0 reads the counters on every call. Safe to share between threads; open one store
    per process (after any fork).
    """

    def __init__(
        self,
        config: EngineConfig,
        redis_config: RedisStoreConfig,
        *,
        prior_ttl_seconds: float = 5.0,
    ) -> None:
        super().__init__(config)
        self.redis_config = redis_config
        self.prior_ttl_seconds = prior_ttl_seconds
        self.keys = KeyLayout(redis_config.key_prefix, cluster=redis_config.type == "redis+cluster")
        self._lock = threading.Lock()
        self._client: RedisClient | None = None
        self._scripts: dict[str, Script] = {}
        self._closed = False
        self._prior: tuple[float, ChannelPrior] | None = None
        self._rng = random.Random()
        self._customer_turns = [threading.Lock() for _ in range(_CUSTOMER_TURN_STRIPES)]
        access = RedisAccess(self._redis, self._script, self.keys, config, redis_config)
        self._access = access
        self._identities = RedisIdentities(access)
        self._privacy = RedisPrivacy(access, self._identities)
        self._log = RedisLog(access)

    # -- OnlineStore ---------------------------------------------------------------------------

    def read_profile(self, customer_id: str) -> Profile | None:
        with translated_errors():
            stored = self._redis().get(self.keys.customer(customer_id).profile)
        if stored is None:  # only then, one more read: was the customer merged into another?
            survivor = self._identities.canonical(customer_id)
            return None if survivor == customer_id else self.read_profile(survivor)
        return decode_profile(as_bytes(stored))

    def apply_events(self, events: Sequence[Event]) -> list[AppendStatus]:
        """See `OnlineStore.apply_events`. One atomic commit per customer, in order of first
        appearance; if a later customer's commit fails, earlier customers stay committed and a
        retry of the whole batch reports their events DUPLICATE.
        """
        positions: dict[str, list[int]] = {}
        for position, event in enumerate(events):
            positions.setdefault(event.customer_id, []).append(position)
        statuses: dict[int, AppendStatus] = {}
        for customer_id, customer_positions in positions.items():
            customer_events = [events[position] for position in customer_positions]
            customer_statuses = self._apply_customer_events(customer_id, customer_events)
            statuses.update(zip(customer_positions, customer_statuses, strict=True))
        return [statuses[position] for position in range(len(events))]

    def customer_events(self, customer_id: str) -> list[Event]:
        """The latest `event_log_cap` accepted events of the customer, in acceptance order."""
        with translated_errors():
            entries = self._redis().lrange(self.keys.customer(customer_id).events, 0, -1)
        if not entries:
            survivor = self._identities.canonical(customer_id)
            return [] if survivor == customer_id else self.customer_events(survivor)
        return [decode_log_entry(customer_id, as_bytes(entry)) for entry in entries]

    def log_decision(self, decision: Decision) -> None:
        """See `OnlineStore.log_decision`; the decision stays readable (`read_decision`) for
        `decision_ttl_seconds`, and in the log (`read_log`) until its customer is erased.

        Writing the very same bytes again is not an error: that is what a command retried after
        a lost reply looks like. The decision is appended to its customer's log (and indexed
        under the customer) first, so that an erasure finds every decision that was written; if
        the id turns out to be another decision's, that entry is taken back. A process that dies
        in between leaves a log entry of a decision that nobody was given (no outcome can
        refer to it), never a decision given but not logged.
        """
        key = self.keys.decision(decision.decision_id)
        body = encode_document(decision.model_dump_json(), self.redis_config.compress_min_bytes)
        appended = self._log.append_decision(decision, body)
        with translated_errors():
            client = self._redis()
            if client.set(key, body, nx=True, ex=self.redis_config.decision_ttl_seconds):
                return
            if client.get(key) == body:
                return
        self._log.take_back(decision.decision_id, appended)
        raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")

    def read_decision(self, decision_id: str) -> Decision | None:
        with translated_errors():
            stored = self._redis().get(self.keys.decision(decision_id))
        if stored is None:
            return None
        return Decision.model_validate_json(decode_document(as_bytes(stored)))

    def population_prior(self) -> ChannelPrior:
        now = time.monotonic()
        cached = self._prior
        if cached is not None and now < cached[0]:
            return cached[1]
        # Two threads may both refresh after expiry; both compute the same prior, so no lock.
        with translated_errors():
            stored = self._redis().hgetall(self.keys.population())
        counts: dict[str, dict[str, float]] = {}
        for field, count in stored.items():
            dimension, channel = split_population_field(as_bytes(field).decode())
            counts.setdefault(dimension, {})[channel] = float(int(count))
        prior = ChannelPrior.from_counts(counts)
        self._prior = (now + self.prior_ttl_seconds, prior)
        return prior

    # -- identities and privacy: feature_store.redis.identity, feature_store.redis.privacy -----

    def resolve_identity(self, identity: HashedIdentity) -> str | None:
        return self._identities.resolve(identity)

    def link_identities(
        self, identities: Sequence[HashedIdentity], customer_id: str | None, *, at: datetime
    ) -> IdentityLink:
        return self._identities.link(identities, customer_id, at=at)

    def export_customer(self, customer_id: str) -> CustomerExport | None:
        return self._privacy.export(customer_id)

    def erase_customer(self, customer_id: str) -> bool:
        return self._privacy.erase(customer_id)

    # -- the logs: feature_store.redis.log ------------------------------------------------------

    def read_log(self, table: LogTable, after: int, limit: int) -> LogPage:
        return self._log.read(table, after, limit)

    def erased_digests(self) -> set[str]:
        return self._log.erased_digests()

    # -- health ----------------------------------------------------------------------------------

    def ping(self) -> None:
        """PING the server; on a cluster, every primary must answer."""
        with translated_errors():
            client = self._redis()
            if isinstance(client, RedisCluster):
                client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                client.ping()

    def close(self) -> None:
        """Close the pooled connections. Later calls raise `StoreUnavailable`."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- writes --------------------------------------------------------------------------------

    def _apply_customer_events(self, customer_id: str, events: list[Event]) -> list[AppendStatus]:
        # Serialised once, outside the retry loop, to keep each attempt short.
        entries = [encode_log_entry(event) for event in events]
        event_ids = list(dict.fromkeys(event.event_id for event in events))
        hops = 0
        for attempt in range(self.redis_config.max_commit_attempts):
            stored, statuses = self._try_update(customer_id, events, entries, event_ids)
            if statuses is not None:
                return statuses
            if stored.alias is not None:  # merged into another customer: theirs now
                hops += 1
                if hops > MAX_ALIAS_HOPS:
                    raise StoreError(f"more than {MAX_ALIAS_HOPS} merges lead from a customer")
                customer_id = stored.alias
                events = [e.model_copy(update={"customer_id": customer_id}) for e in events]
            elif stored.pending:  # a merge into the customer is under way, or was interrupted
                self._identities.settle(customer_id)
            else:
                delay = min(_CONFLICT_BACKOFF_CAP, _CONFLICT_BACKOFF_BASE * 2**attempt)
                time.sleep(self._rng.uniform(0, delay))
        raise StoreUnavailable(
            "too many concurrent updates of one customer; retry later",
            retry_after=_RETRY_AFTER_CONTENTION,
        )

    def _try_update(
        self, customer_id: str, events: list[Event], entries: list[bytes], event_ids: list[str]
    ) -> tuple[_Stored, list[AppendStatus] | None]:
        """One read-fold-commit of the customer: its statuses, or None if nothing was written
        (a conflict, an alias to follow or a pending merge to settle)."""
        # Writers of one customer in this process take turns, so they never waste a fold on a
        # conflict among themselves; conflicts come from other processes only.
        with self._turn(customer_id):
            stored = self._read_for_update(customer_id, event_ids)
            if stored.alias is not None or stored.pending:
                return stored, None
            if stored.profile is None and self._access.is_erased(customer_id):
                return stored, [AppendStatus.ERASED] * len(events)
            profile = None if stored.profile is None else decode_profile(stored.profile)
            update = _fold_new_events(profile, events, stored.known, self.config)
            if not update.logged:
                return stored, update.statuses
            if not self._commit(customer_id, stored.profile, update, events, entries):
                return stored, None
        return stored, self._after_commit(customer_id, stored, update)

    def _after_commit(
        self, customer_id: str, stored: _Stored, update: _Update
    ) -> list[AppendStatus]:
        if stored.profile is None and self._access.is_erased(customer_id):
            # Erased between this writer's check and its commit: the one window an erasure
            # cannot close by itself (feature_store.redis.privacy), so erase it again.
            self._privacy.erase(customer_id)
            return [AppendStatus.ERASED] * len(update.statuses)
        self._count_population(update.applied)
        return update.statuses

    def _turn(self, customer_id: str) -> threading.Lock:
        return self._customer_turns[zlib.crc32(customer_id.encode()) % len(self._customer_turns)]

    def _read_for_update(self, customer_id: str, event_ids: list[str]) -> _Stored:
        """The stored profile, which of `event_ids` are within the dedup window, the customer's
        alias and pending merges."""
        keys = self.keys.customer(customer_id)
        with translated_errors():
            profile, flags, alias, pending = self._script("READ_FOR_UPDATE")(
                keys=[keys.profile, keys.dedup, keys.alias, keys.pending], args=event_ids
            )
        return _Stored(
            profile=profile,
            known={event_id for event_id, flag in zip(event_ids, flags, strict=True) if flag},
            alias=None if alias is None else as_bytes(alias).decode(),
            pending=[as_bytes(member).decode() for member in pending],
        )

    def _commit(
        self,
        customer_id: str,
        stored: bytes | None,
        update: _Update,
        events: list[Event],
        entries: list[bytes],
    ) -> bool:
        """Write `update` if nobody committed since `stored` was read, the customer was not
        merged meanwhile and no merge into it is pending; False otherwise. The logged events
        go to the customer's log shard in the same script (feature_store.redis.log)."""
        keys = self.keys.customer(customer_id)
        shard = self.keys.customer_log_shard(customer_id)
        config = self.redis_config
        profile = (
            b""
            if update.profile is None
            else encode_document(update.profile.model_dump_json(), config.compress_min_bytes)
        )
        args: list[str | bytes | int] = [
            profile_version(stored),
            profile,
            max(1, round(config.dedup_window_seconds * 1000)),
            config.event_log_cap,
            customer_id,
        ]
        for position in update.logged:
            event_id, status = events[position].event_id, update.statuses[position].value
            args += [event_id, entries[position], status]
        script_keys = [keys.profile, keys.events, keys.dedup, keys.alias, keys.pending]
        script_keys += [keys.event_log, shard.events, shard.counters]
        with translated_errors():
            committed = self._script("COMMIT")(keys=script_keys, args=args)
        return bool(committed)

    def _count_population(self, applied: list[Event]) -> None:
        counts = Counter(
            population_field(dimension, channel)
            for event in applied
            for dimension, channel in population_dimensions(event)
        )
        if not counts:
            return
        args: list[str | int] = [item for pair in sorted(counts.items()) for item in pair]
        try:
            with translated_errors():
                self._script("COUNT_POPULATION")(keys=[self.keys.population()], args=args)
        except StoreError:
            # The events are committed: reporting a failure would make the client resend them
            # only to hear DUPLICATE. The counters are approximate by design (module docstring).
            logger.warning("population counters not updated", exc_info=True)

    # -- the connection ------------------------------------------------------------------------

    def _redis(self) -> RedisClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise StoreUnavailable(
                    "the Redis store is closed", retry_after=RETRY_AFTER_UNREACHABLE
                )
            if self._client is None:
                # A cluster client reads the slot map when it is created, so a cluster that is
                # down when the store opens is only an error of the calls made meanwhile.
                client = connect(self.redis_config)
                self._scripts = {
                    name: client.register_script(getattr(redis_scripts, name))
                    for name in redis_scripts.NAMES
                }
                self._client = client
            return self._client

    def _script(self, name: str) -> Script:
        self._redis()
        return self._scripts[name]


def _fold_new_events(
    profile: Profile | None, events: list[Event], known: set[str], config: EngineConfig
) -> _Update:
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
        return _Update(statuses, None, [], [])
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
    return _Update(statuses, folded if applied else None, logged, applied)
