"""Where the Redis store keeps things: the key layout, in one place.

Every key starts with a namespace prefix (default `rp`), so several deployments, or the tests,
can share one Redis. A customer's keys put the customer id in a hash tag (`{...}`): Redis
Cluster places every key of one customer in the same slot, which is what lets one Lua script
update all of them atomically.

=======================  =======  ============================================================
key                      type     holds
=======================  =======  ============================================================
`rp:{<customer>}:p`      string   the profile: JSON, zlib-compressed when that is smaller
`rp:{<customer>}:e`      list     the latest accepted events not yet exported, oldest first
                                  (capped)
`rp:{<customer>}:d`      hash     the dedup window: bucket expiry (Unix ms) -> the 8-byte
                                  digests of the event ids accepted into it (format 2; format
                                  1, a zset of event id -> expiry, is still read)
`rp:{<customer>}:i`      set      the customer's identifiers, as `<type>:<digest>`
`rp:{<customer>}:x`      zset     the customer's decision ids -> expiry (Unix ms)
`rp:{<customer>}:m`      set      customers merged into this one
`rp:{<customer>}:g`      set      customers being merged into this one (merge intents)
`rp:{<customer>}:a`      string   a merged customer: the customer it was merged into
`rp:{<customer>}:o?`     (as ?)   a merged customer's p, e, d, i, x, m until the survivor has
                                  taken them over (`op`, `oe`, `od`, `oi`, `ox`, `om`)
`rp:{<customer>}:l`      string   a lease held while linking or erasing the customer
`rp:{<customer>}:le`     list     the customer's entries in its shard's event log: their seqs
`rp:{<customer>}:ld`     hash     the customer's decisions in its shard's decision log:
                                  decision id -> seq (also what makes logging them idempotent)
`rp:id:{<type>:<hex>}`   hash     one identifier: `c` customer, `m` masked form, `t` linked at
`rp:erased:<h>`          hash     erased customers: digest of the id -> erased at (ISO 8601);
                                  16 shards, `<h>` the digest's first hex digit
`rp:dec:<decision>`      string   one logged decision (JSON, maybe compressed), with a TTL
`rp:pop`                 hash     population channel counters, `<dimension>|<channel>` -> count
`rp:log:{<s>}:e`         stream   log shard `<s>`: the event-log entries of its customers, with
                                  IDs `<seq>-0` (fields `c` customer, `s` status, `b` entry)
`rp:log:{<s>}:d`         stream   the same for decisions (`c` customer, `t` decided at in
                                  Unix microseconds, `b` the decision as stored at `rp:dec:`)
`rp:log:{<s>}:n`         hash     the last seq given in each of the shard's logs (`e`, `d`)
`rp:order:{<log>}:b`     zset     the order of the whole log `events` or `decisions`: blocks
                                  `<shard>:<from>:<to>` scored by the seq of their first entry
`rp:order:{<log>}:c`     hash     how far each shard is ordered (shard -> seq), `n` the last seq
=======================  =======  ============================================================

Log shards (`feature_store.redis.log`): on a cluster, one per hash slot, and `<s>` is a tag
that hashes to that slot (`slot_tag`), so a customer's commit appends to its slot's shard in the
same script; on one server a single shard, `<s>` = `0`. The tags are stored data: the way
they are chosen never changes.

Customer ids are `engine.events.Identifier`s, which cannot contain braces, so the whole id is
the hash tag. Suffixes are one or two letters because every byte of a key is paid for per
customer. Identifier digests are already keyed HMACs (`engine.identity`): no raw identifier
and, in the erasure records, no customer id reaches Redis.
"""

from __future__ import annotations

import binascii
import re
from functools import cache
from typing import NamedTuple

from feature_store.base import LogTable

DEFAULT_PREFIX = "rp"

#: A prefix may not contain braces (it would move the hash tag) nor the separator.
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")

#: Separates a population dimension from a channel in a counter field: neither contains it.
POPULATION_FIELD_SEPARATOR = "|"

#: Redis Cluster's hash slots.
CLUSTER_SLOTS = 16_384


class CustomerKeys(NamedTuple):
    """The keys of one customer, all in one cluster slot (same hash tag)."""

    profile: str
    events: str
    dedup: str
    identities: str
    decisions: str
    merged: str
    pending: str
    alias: str
    event_log: str
    decision_log: str
    lock: str

    @property
    def movable(self) -> tuple[str, str, str, str, str, str]:
        """What a merge hands over to the survivor, in the order of `KeyLayout.outgoing`."""
        return (
            self.profile,
            self.events,
            self.dedup,
            self.identities,
            self.decisions,
            self.merged,
        )


class OutgoingKeys(NamedTuple):
    """A merged customer's state, set aside in its own slot until the survivor takes it."""

    profile: str
    events: str
    dedup: str
    identities: str
    decisions: str
    merged: str


class LogShardKeys(NamedTuple):
    """One shard of the logs: its event and decision streams and their seq counters."""

    events: str
    decisions: str
    counters: str

    def stream(self, log: LogTable) -> str:
        return self.events if log == "events" else self.decisions


class LogOrderKeys(NamedTuple):
    """The order of one whole log over its shards (one slot of its own)."""

    blocks: str
    cursors: str


class KeyLayout:
    """Builds the keys of one namespace, e.g. `KeyLayout("rp").customer("cust-42").profile`.

    `cluster`: whether the keys are for Redis Cluster, where the logs have one shard per slot.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, cluster: bool = False) -> None:
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(f"a key prefix matches {PREFIX_PATTERN.pattern}, got {prefix!r}")
        self.prefix = prefix
        self.log_shards = CLUSTER_SLOTS if cluster else 1

    def customer(self, customer_id: str) -> CustomerKeys:
        tagged = f"{self.prefix}:{{{customer_id}}}"
        return CustomerKeys(*(f"{tagged}:{suffix}" for suffix in _CUSTOMER_SUFFIXES))

    def outgoing(self, customer_id: str) -> OutgoingKeys:
        tagged = f"{self.prefix}:{{{customer_id}}}"
        return OutgoingKeys(*(f"{tagged}:o{suffix}" for suffix in "pedixm"))

    def every_customer_key(self, customer_id: str) -> list[str]:
        """Every key the customer may have, but its lease (which its holder releases)."""
        return [*self.customer(customer_id)[:-1], *self.outgoing(customer_id)]

    def log_shard_of(self, customer_id: str) -> int:
        """The log shard of the customer: its cluster slot, or 0 on one server."""
        return cluster_slot(customer_id) if self.log_shards > 1 else 0

    def log_shard(self, shard: int) -> LogShardKeys:
        tag = slot_tag(shard) if self.log_shards > 1 else "0"
        tagged = f"{self.prefix}:log:{{{tag}}}"
        return LogShardKeys(f"{tagged}:e", f"{tagged}:d", f"{tagged}:n")

    def customer_log_shard(self, customer_id: str) -> LogShardKeys:
        return self.log_shard(self.log_shard_of(customer_id))

    def log_order(self, log: LogTable) -> LogOrderKeys:
        tagged = f"{self.prefix}:order:{{{log}}}"
        return LogOrderKeys(f"{tagged}:b", f"{tagged}:c")

    def customer_pattern(self, customer_id: str) -> str:
        """A SCAN MATCH pattern for every key of the customer (ids hold no glob characters)."""
        return f"{self.prefix}:{{{customer_id}}}:*"

    def identity(self, reference: str) -> str:
        """The key of an identifier, from its reference `<type>:<digest>` (its own slot)."""
        return f"{self.prefix}:id:{{{reference}}}"

    def erasures(self, digest: str) -> str:
        """The erasure-record shard of a customer digest (`engine.identity.customer_digest`)."""
        return f"{self.prefix}:erased:{digest[0]}"

    def decision(self, decision_id: str) -> str:
        # Looked up by id alone, so no hash tag: decisions spread over the whole cluster.
        return f"{self.prefix}:dec:{decision_id}"

    def population(self) -> str:
        return f"{self.prefix}:pop"


#: Suffixes of `CustomerKeys`, in its order.
_CUSTOMER_SUFFIXES = ("p", "e", "d", "i", "x", "m", "g", "a", "le", "ld", "l")


def cluster_slot(customer_id: str) -> int:
    """The Redis Cluster hash slot of a customer's keys (CRC16/XMODEM of the hash tag)."""
    return binascii.crc_hqx(customer_id.encode(), 0) % CLUSTER_SLOTS


def slot_tag(slot: int) -> str:
    """A hash tag that Redis Cluster puts in `slot`: the smallest decimal number that does."""
    return _slot_tags()[slot]


@cache
def _slot_tags() -> tuple[str, ...]:
    # Every slot is hit by a number below 110,000: about 0.1 s, once per process.
    tags: list[str | None] = [None] * CLUSTER_SLOTS
    missing, number = CLUSTER_SLOTS, 0
    while missing:
        tag = str(number)
        slot = cluster_slot(tag)
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        number += 1
    return tuple(tag for tag in tags if tag is not None)


def identity_reference(type_: str, digest: str) -> str:
    """How a customer's identifier set names one identifier: `<type>:<digest>`."""
    return f"{type_}:{digest}"


def split_identity_reference(reference: str) -> tuple[str, str]:
    type_, _, digest = reference.partition(":")
    return type_, digest


def population_field(dimension: str, channel: str) -> str:
    return f"{dimension}{POPULATION_FIELD_SEPARATOR}{channel}"


def split_population_field(field: str) -> tuple[str, str]:
    dimension, _, channel = field.rpartition(POPULATION_FIELD_SEPARATOR)
    return dimension, channel
