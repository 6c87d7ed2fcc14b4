"""Where the Redis store keeps things: the key layout, in one place.

Every key starts with a namespace prefix (default `rp`), so several deployments, or the tests,
can share one Redis. A customer's keys put the customer id in a hash tag (`{...}`): Redis
Cluster places every key of one customer in the same slot, which is what lets one Lua script
update all of them atomically.

=====================  =======  ==============================================================
key                    type     holds
=====================  =======  ==============================================================
`rp:{<customer>}:p`    string   the profile: JSON, zlib-compressed when that is smaller
`rp:{<customer>}:e`    list     the latest accepted events, oldest first (capped)
`rp:{<customer>}:d`    zset     event ids seen within the dedup window -> expiry (Unix ms)
`rp:dec:<decision>`    string   one logged decision (JSON, maybe compressed), with a TTL
`rp:pop`               hash     population channel counters, `<dimension>|<channel>` -> count
=====================  =======  ==============================================================

Customer ids are `engine.events.Identifier`s, which cannot contain braces, so the whole id is
the hash tag. Suffixes are one letter because every byte of a key is paid for per customer.
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


class KeyLayout:
    """Builds the keys of one namespace, e.g. `KeyLayout("rp").customer("cust-42").profile`."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(f"a key prefix matches {PREFIX_PATTERN.pattern}, got {prefix!r}")
        self.prefix = prefix

    def customer(self, customer_id: str) -> CustomerKeys:
        tagged = f"{self.prefix}:{{{customer_id}}}"
        return CustomerKeys(profile=f"{tagged}:p", events=f"{tagged}:e", dedup=f"{tagged}:d")

    def customer_pattern(self, customer_id: str) -> str:
        """A SCAN MATCH pattern for every key of the customer (ids hold no glob characters)."""
        return f"{self.prefix}:{{{customer_id}}}:*"

    def decision(self, decision_id: str) -> str:
        # Looked up by id alone, so no hash tag: decisions spread over the whole cluster.
        return f"{self.prefix}:dec:{decision_id}"

    def population(self) -> str:
        return f"{self.prefix}:pop"


def population_field(dimension: str, channel: str) -> str:
    return f"{dimension}{POPULATION_FIELD_SEPARATOR}{channel}"


def split_population_field(field: str) -> tuple[str, str]:
    dimension, _, channel = field.rpartition(POPULATION_FIELD_SEPARATOR)
    return dimension, channel
