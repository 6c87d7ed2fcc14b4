"""How the Redis store records a decision: the decision log and the exposures in one round trip.

`record_decision(decision, delivered)` sends one pipeline (one round trip; on a cluster one per
node, in parallel):

* `LOG_DECISION` (the customer's slot): the decision appended to its log shard and indexed
  under the customer (`feature_store.redis.log`, `feature_store.redis.privacy`);
* `SET rp:dec:<id> NX EX`: the decision readable by id (`read_decision`);
* `COMMIT` of the delivered actions (the customer's slot), folded into the profile that the
  last `read_profile` of the customer in this process returned, with that profile's bytes
  as the version checked: the exposures count toward caps before the next read of the
  profile can see it (the promise that caps rest on), or nothing is written;
* for a customer with no profile yet, the erasure-record check; and the population counters.

When the check-and-set fails (another writer changed the profile since it was read), or the
profile read is not known (no `read_profile` of the customer before, or another read since
displaced it), or the customer turns out to be merged, the exposures go through
`apply_events` (`feature_store.redis.ingest`): more round trips, the same outcome. A duplicate
decision id (another decision's) raises `DuplicateDecision` after its log entry is taken back;
its exposures, committed in the same round trip, stay counted (a decision id is a fresh UUID:
this is a caller's bug, and counting too much only makes caps stricter).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from engine.decision import Decision
from engine.events import Event
from engine.identity import customer_digest
from feature_store.errors import DuplicateDecision
from feature_store.redis.codec import (
    as_bytes,
    decode_profile,
    encode_document,
    microseconds,
)
from feature_store.redis.connection import Command, ScriptCall, pipelined, translated_errors
from feature_store.redis.identity import RedisAccess
from feature_store.redis.ingest import (
    CustomerBatch,
    RedisIngest,
    fold_new_events,
    population_counts,
    retention_call,
)
from feature_store.redis.log import Appended, RedisLog
from feature_store.redis.privacy import RedisPrivacy

#: Profiles read remembered per process, for the check-and-set of the exposures that follow.
_READS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class _Read:
    """The bytes a `read_profile` of the customer returned (None: no profile)."""

    stored: bytes | None


class ProfileReads:
    """The stored profile bytes of the latest reads, by customer, bounded (a plain dict that
    is emptied when full: losing an entry costs only the fast path of one decision)."""

    def __init__(self) -> None:
        self._reads: dict[str, _Read] = {}
        self._lock = threading.Lock()

    def remember(self, customer_id: str, stored: bytes | None) -> None:
        with self._lock:
            if len(self._reads) >= _READS_KEPT:
                self._reads.clear()
            self._reads[customer_id] = _Read(stored)

    def take(self, customer_id: str) -> _Read | None:
        with self._lock:
            return self._reads.pop(customer_id, None)


class RedisDecisions:
    """`record_decision` and `log_decision` of `RedisStore` (see the module docstring)."""

    def __init__(
        self,
        access: RedisAccess,
        log: RedisLog,
        ingest: RedisIngest,
        privacy: RedisPrivacy,
        reads: ProfileReads,
    ) -> None:
        self.access = access
        self.keys = access.keys
        self.log = log
        self.ingest = ingest
        self.privacy = privacy
        self.reads = reads

    def body(self, decision: Decision) -> bytes:
        """The decision as `rp:dec:<id>` and the log hold it."""
        config = self.access.redis_config
        return encode_document(decision.model_dump_json(), config.compress_min_bytes)

    def log_decision(self, decision: Decision) -> None:
        """See `RedisStore.log_decision`: two round trips (log, then the decision by id)."""
        body = self.body(decision)
        appended = self.log.append_decision(decision, body)
        key = self.keys.decision(decision.decision_id)
        with translated_errors():
            client = self.access.client()
            ttl = self.access.redis_config.decision_ttl_seconds
            if client.set(key, body, nx=True, ex=ttl):
                return
        self._check_duplicate(decision, body, appended)

    def record(self, decision: Decision, delivered: Sequence[Event]) -> None:
        """See `OnlineStore.record_decision` and the module docstring."""
        customer_id = decision.customer_id
        read = self.reads.take(customer_id)
        body = self.body(decision)
        ttl = self.access.redis_config.decision_ttl_seconds
        calls: list[ScriptCall | Command] = [
            self._log_call(decision, body),
            ("SET", self.keys.decision(decision.decision_id), body, "NX", "EX", ttl),
        ]
        trim = retention_call(self.access, self.keys.customer_log_shard(customer_id).decisions)
        if trim is not None:
            calls.append(trim)
        commit_at = erased_at = None
        fast = read is not None and all(e.customer_id == customer_id for e in delivered)
        if delivered and fast and read is not None:
            batch = CustomerBatch(customer_id, list(range(len(delivered))), list(delivered))
            profile = None if read.stored is None else decode_profile(read.stored)
            update = fold_new_events(profile, batch.events, set(), self.access.config)
            if read.stored is None:  # a first write: is the customer erased?
                erased_at = len(calls)
                digest = customer_digest(customer_id)
                calls.append(("HEXISTS", self.keys.erasures(digest), digest))
            commit_at = len(calls)
            calls.append(self.ingest.commit_call(batch, read.stored, update))
            shard = self.keys.customer_log_shard(customer_id)
            if (trim := retention_call(self.access, shard.events)) is not None:
                calls.append(trim)
            counts = population_counts(update.applied)
            if counts:
                calls.append(self.ingest.population_call(counts))
        replies = pipelined(self.access.client(), calls)
        outcome, value = replies[0]
        if outcome == b"logged":
            appended = Appended(customer_id, int(value))
        else:  # merged into another customer: logged under the survivor
            appended = self.log.append_decision(decision, body)
        if not replies[1]:
            self._check_duplicate(decision, body, appended)
        if commit_at is not None and replies[commit_at]:
            if erased_at is not None and replies[erased_at]:
                self.privacy.erase(customer_id)  # erased before this first write: again
            return
        if delivered:  # the slow path: read again, fold, commit
            self.ingest.apply(delivered, count=commit_at is None)

    def _log_call(self, decision: Decision, body: bytes) -> ScriptCall:
        customer_id = decision.customer_id
        keys = self.keys.customer(customer_id)
        shard = self.keys.customer_log_shard(customer_id)
        indexes = [keys.alias, keys.profile, keys.identities, keys.decisions, keys.decision_log]
        ttl_ms = self.access.redis_config.decision_ttl_seconds * 1000
        return ScriptCall(
            self.access.script("LOG_DECISION"),
            [*indexes, shard.decisions, shard.counters],
            [decision.decision_id, ttl_ms, customer_id, microseconds(decision.decided_at), body],
        )

    def _check_duplicate(self, decision: Decision, body: bytes, appended: Appended) -> None:
        """The decision id was set already: the same bytes are a retry, others a duplicate."""
        with translated_errors():
            stored = self.access.client().get(self.keys.decision(decision.decision_id))
        if stored is not None and as_bytes(stored) == body:
            return
        self.log.take_back(decision.decision_id, appended)
        raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")
