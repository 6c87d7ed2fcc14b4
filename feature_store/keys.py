"""Where the Redis store keeps things: the key layout, in one place.

Every key starts with a namespace prefix (default `rp`), so several deployments, or the tests,
can share one Redis. A customer's keys put the customer id in a hash tag (`{...}`): Redis
Cluster places every key of one customer in the same slot, which is what lets one Lua script
update all of them atomically.

=======================  =======  ============================================================
key                      type     holds
=======================  =======  ============================================================
`rp:{<customer>}:p`      string   the profile: JSON, zlib-compressed when that is smaller
`rp:{<customer>}:e`      list     the latest accepted events, oldest first (capped)
`rp:{<customer>}:d`      zset     event ids seen within the dedup window -> expiry (Unix ms)
`rp:{<customer>}:i`      set      the customer's identifiers, as `<type>:<digest>`
`rp:{<customer>}:x`      zset     the customer's decision ids -> expiry (Unix ms)
`rp:{<customer>}:m`      set      customers merged into this one
`rp:{<customer>}:g`      set      customers being merged into this one (merge intents)
`rp:{<customer>}:a`      string   a merged customer: the customer it was merged into
`rp:{<customer>}:o?`     (as ?)   a merged customer's p, e, d, i, x, m until the survivor has
                                  taken them over (`op`, `oe`, `od`, `oi`, `ox`, `om`)
`rp:{<customer>}:l`      string   a lease held while linking or erasing the customer
`rp:id:{<type>:<hex>}`   hash     one identifier: `c` customer, `m` masked form, `t` linked at
`rp:erased:<h>`          hash     erased customers: digest of the id -> erased at (ISO 8601);
                                  16 shards, `<h>` the digest's first hex digit
`rp:dec:<decision>`      string   one logged decision (JSON, maybe compressed), with a TTL
`rp:pop`                 hash     population channel counters, `<dimension>|<channel>` -> count
=======================  =======  ============================================================

Customer ids are `engine.events.Identifier`s, which cannot contain braces, so the whole id is
the hash tag. Suffixes are one or two letters because every byte of a key is paid for per
customer. Identifier digests are already keyed HMACs (`engine.identity`): no raw identifier
and, in the erasure records, no customer id reaches Redis.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_PREFIX = "rp"

#: A prefix may not contain braces (it would move the hash tag) nor the separator.
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")

#: Separates a population dimension from a channel in a counter field: neither contains it.
POPULATION_FIELD_SEPARATOR = "|"


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


class KeyLayout:
    """Builds the keys of one namespace, e.g. `KeyLayout("rp").customer("cust-42").profile`."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(f"a key prefix matches {PREFIX_PATTERN.pattern}, got {prefix!r}")
        self.prefix = prefix

    def customer(self, customer_id: str) -> CustomerKeys:
        tagged = f"{self.prefix}:{{{customer_id}}}"
        return CustomerKeys(*(f"{tagged}:{suffix}" for suffix in "pedixmgal"))

    def outgoing(self, customer_id: str) -> OutgoingKeys:
        tagged = f"{self.prefix}:{{{customer_id}}}"
        return OutgoingKeys(*(f"{tagged}:o{suffix}" for suffix in "pedixm"))

    def every_customer_key(self, customer_id: str) -> list[str]:
        """Every key the customer may have, but its lease (which its holder releases)."""
        return [*self.customer(customer_id)[:-1], *self.outgoing(customer_id)]

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
