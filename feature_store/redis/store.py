"""The production online store: Redis, standalone (`redis://`) or Redis Cluster (`redis+cluster://`).

Key layout: `feature_store.keys`; encodings: `feature_store.redis.codec`; scripts:
`feature_store.redis.scripts`; the event and decision logs that `read_log` reads:
`feature_store.redis.log`. Needs Redis 7.0 or newer.

Updates are optimistic and batched (`feature_store.redis.ingest`): one pipelined round trip
reads every customer of a batch, the client folds (`engine.fold`), one pipelined round trip
commits every customer with a single-slot check-and-set script, and only the customers whose
commit lost are tried again.

A customer merged into another (`link_identities`) has an alias in its slot: the read script
returns it and the update goes to the survivor; `read_profile` and `customer_events` look for
the alias only when the customer has nothing of its own, so a known customer's read stays one
GET. An update checks the erasure records only when the customer has no profile (see
`feature_store.redis.privacy` for why that is enough; merges: `feature_store.redis.identity`).

After `max_commit_attempts` rounds it raises `StoreUnavailable` (the API answers 503 and the
touchpoint retries; nothing accepted is lost). Scripts only touch keys of one hash tag, so they
behave the same on one server and on a cluster.

Idempotence is by event id within `dedup_window_seconds` (default 7 days) of the id's
acceptance, on the server's clock. After the window the profile's own ring of recent event ids
(`EngineConfig.seen_capacity`) still answers DUPLICATE to an exact resend (same id and
`occurred_at`) while the event is among the customer's latest ones; a late resend with another
`occurred_at` would be folded again. Clients must not retry for longer than the window.

What the online store keeps, and what it does not:

* the customer's list of events (`customer_events`) holds their latest `event_log_cap` events
  (default 1,000) not yet exported, in order of acceptance: once an export run has been
  acknowledged (`acknowledge_export`), the events it saved leave the list and the logs, and
  the customer export (`GET /v1/customers/{id}/export`) reads them back from the offline
  store (`feature_store.offline.export.complete_export`). Until then an event is held twice
  (the list and its log shard);
* the event and decision logs (`read_log`, for the offline export) hold every entry until an
  export acknowledges it, its customer is erased, or its shard holds more than
  `log_retention_entries` (if set; see `feature_store.redis.log`);
* event ids are remembered for `dedup_window_seconds` (at most an eighth more) as 8-byte
  digests in time buckets (`feature_store.redis.scripts`, format 2 of the dedup window; the
  sorted sets of ids that earlier versions wrote are read and rewritten by the next write);
* a decision stays readable (`read_decision`) for `decision_ttl_seconds` (default 90 days):
  an outcome reported later refers to an unknown decision. It is indexed under its customer
  (for export and erasure) when the store holds anything of that customer; a decision for an
  id the store knows nothing of (an anonymous one, say) is not indexed and only expires (the
  decision log keeps every decision, indexed or not, until its customer is erased);
* the population counters are incremented after the customers' commits, by another script in
  the next round trip (they live on another slot), or in the same pipeline for a decision's
  exposures. They are approximate: a failure between the two, a commit whose reply was lost
  or a check-and-set lost after the count leave some events uncounted or counted twice. They
  feed a prior, not a ledger.

Unreachable servers: sockets time out after `socket_timeout_seconds`, connection errors are
retried `retries` times with jittered exponential backoff, then the call raises
`StoreUnavailable`. Connections are pooled and re-established by later calls, so a store
recovers by itself when Redis is back. No method talks to Redis before its first call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from redis.cluster import RedisCluster
from redis.commands.core import Script

from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.identity import HashedIdentity, customer_digest
from engine.profile import Profile
from feature_store.base import (
    AppendStatus,
    CustomerExport,
    IdentityLink,
    LogPage,
    LogTable,
    OnlineStore,
)
from feature_store.keys import (
    KeyLayout,
    split_population_field,
)
from feature_store.redis import scripts as redis_scripts
from feature_store.redis.codec import (
    as_bytes,
    decode_document,
    decode_log_entry,
    decode_profile,
)
from feature_store.redis.config import RedisStoreConfig
from feature_store.redis.connection import (
    LazyClient,
    RedisClient,
    connect,
    translated_errors,
)
from feature_store.redis.decisions import ProfileReads, RedisDecisions
from feature_store.redis.identity import RedisAccess, RedisIdentities
from feature_store.redis.ingest import RedisIngest
from feature_store.redis.log import RedisLog
from feature_store.redis.privacy import RedisPrivacy

logger = logging.getLogger(__name__)


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
        prior_ttl_seconds: float = 0.5,
    ) -> None:
        super().__init__(config)
        self.redis_config = redis_config
        self.prior_ttl_seconds = prior_ttl_seconds
        self.keys = KeyLayout(redis_config.key_prefix, cluster=redis_config.type == "redis+cluster")
        self._scripts: dict[str, Script] = {}
        # A cluster client reads the slot map when it is created, so a cluster that is down
        # when the store opens is only an error of the calls made meanwhile.
        self._connection = LazyClient(
            partial(connect, redis_config), "Redis store", on_open=self._register_scripts
        )
        access = RedisAccess(self._redis, self._script, self.keys, config, redis_config)
        self._access = access
        self._identities = RedisIdentities(access)
        self._privacy = RedisPrivacy(access, self._identities)
        self._log = RedisLog(access)
        self._ingest = RedisIngest(access, self._identities, self._privacy)
        self._reads = ProfileReads()
        self._decisions = RedisDecisions(
            access, self._log, self._ingest, self._privacy, self._reads
        )

    # -- OnlineStore ---------------------------------------------------------------------------

    def read_profile(self, customer_id: str) -> Profile | None:
        """One round trip: the profile and the alias (a merged customer's survivor), one MGET
        of the customer's slot. The bytes read are remembered for `record_decision`."""
        keys = self.keys.customer(customer_id)
        with translated_errors():
            stored, alias = self._redis().mget(keys.profile, keys.alias)
        if stored is None and alias is not None:
            survivor = self._identities.canonical(customer_id)
            return None if survivor == customer_id else self.read_profile(survivor)
        stored = None if stored is None else as_bytes(stored)
        self._reads.remember(customer_id, stored)
        return None if stored is None else decode_profile(stored)

    def apply_events(self, events: Sequence[Event]) -> list[AppendStatus]:
        """See `OnlineStore.apply_events`: a batch at a time, in pipelined round trips
        (`feature_store.redis.ingest`). Each customer's commit is atomic; if some customer's
        commit fails, the others may be committed and a retry of the whole batch reports their
        events DUPLICATE.
        """
        return self._ingest.apply(events)

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
        self._decisions.log_decision(decision)

    def record_decision(self, decision: Decision, delivered: Sequence[Event]) -> None:
        """See `OnlineStore.record_decision`: the decision log and the exposures in one
        pipelined round trip, checked against the profile `read_profile` returned
        (`feature_store.redis.decisions`)."""
        self._decisions.record(decision, delivered)

    def read_decision(self, decision_id: str) -> Decision | None:
        with translated_errors():
            stored = self._redis().get(self.keys.decision(decision_id))
        if stored is None:
            return None
        return Decision.model_validate_json(decode_document(as_bytes(stored)))

    def population_counts(self) -> dict[str, dict[str, float]]:
        with translated_errors():
            stored = self._redis().hgetall(self.keys.population())
        counts: dict[str, dict[str, float]] = {}
        for field, count in stored.items():
            dimension, channel = split_population_field(as_bytes(field).decode())
            counts.setdefault(dimension, {})[channel] = float(int(count))
        return counts

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

    def acknowledge_export(self, table: LogTable, cursor: int) -> None:
        """Trim the `table` log's streams up to `cursor` (`feature_store.redis.log`)."""
        self._log.acknowledge(table, cursor)

    def erased_digests(self) -> set[str]:
        return self._log.erased_digests()

    def is_erased(self, customer_id: str) -> bool:
        """One HEXISTS on the customer's erasure-record shard."""
        digest = customer_digest(customer_id)
        with translated_errors():
            return bool(self._redis().hexists(self.keys.erasures(digest), digest))

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
        self._connection.close()

    # -- the connection ------------------------------------------------------------------------

    def _redis(self) -> RedisClient:
        return self._connection.get()

    def _register_scripts(self, client: RedisClient) -> None:
        self._scripts = {
            name: client.register_script(getattr(redis_scripts, name))
            for name in redis_scripts.NAMES
        }

    def _script(self, name: str) -> Script:
        self._redis()
        return self._scripts[name]
