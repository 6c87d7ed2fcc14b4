"""The event and decision logs of the Redis store, and how `read_log` reads them in order.

The logs are what `rapport export` reads (`OnlineStore.read_log`): every event accepted (or
logged too late) and every decision, each with a `seq` that orders it in its log. Redis Cluster
gives no atomic operation over two slots, and a customer's commit runs in the customer's slot,
so no counter of the whole cluster can number its entries in that commit. Hence two layers.

Shards: the log is split in shards, one per cluster slot (one shard in all on a single server),
each a stream per log in that slot (`rp:log:{<s>}:e`, `:d`, keys: `feature_store.keys`). The
customer's commit (`COMMIT`, `LOG_DECISION`) appends its entries to its slot's shard, under the
shard's next seq (IDs `<seq>-0`, from a counter beside them), and records those seqs in the
customer's own index (`rp:{<c>}:le`, `:ld`). So the log is written in the same atomic script as
the profile: no extra round trip, and no accepted event can be missing from it, whatever fails
or dies afterwards.

Order: a log's order over its shards is a list of blocks (`rp:order:{<log>}:b`), each a range of
one shard's seqs, `(from, to]`, numbered from the seq that follows the last block's. A reader
that reaches the end of the ordered log orders what the shards gained since (`ORDER_LOG`: one
read of every shard's counter, then one script in the order's slot that appends the new ranges
if nobody ordered them meanwhile). The log's seq of a shard entry is its block's first seq plus
its offset in the block. Since blocks are only ever appended, after every seq already given,
an entry that reaches the log after a page was read gets a larger seq than any entry of that
page: a reader resuming from `next_after` misses nothing and sees nothing twice
(`OnlineStore.read_log`). On a single server the one shard makes one block, whose seqs are the
shard's own.

Erasure (`feature_store.redis.privacy`) deletes the customer's entries from its shard, through
its index, in the same script that deletes the customer's keys (`FORGET_CUSTOMER`); their seqs
stay in their blocks, as gaps. A merge moves nothing in the log: the entries of a merged
customer keep their seq and their customer id, and a read reports them under the customer it
was merged into (following the alias that the merged customer keeps).

Trade-offs:

* Writes pay one `XADD` and one `RPUSH` per logged entry inside the script they already ran
  (the decision's stored bytes travel twice: to the log and to `rp:dec:<id>`).
* An entry is readable once a reader has ordered it, which `read_log` does itself when it gets to
  the end of the ordered log: the shards' counters (on a cluster, one script per primary reads
  those of its slots, `READ_LOG_COUNTERS`), then one script.
  The order within one slot is the order of acceptance; across slots it is the order in which
  readers ordered them (so a customer's entries stay in acceptance order, and a merged
  customer's join the survivor's by that order, as SQLite keeps their first seq).
* Memory: an entry stays until an export acknowledges it (`acknowledge`: `XTRIM MINID` of
  each shard up to the acknowledged seq, with the customers' own copies, `FORGET_EXPORTED`),
  its customer is erased, or its shard holds more than `log_retention_entries` (if set:
  `XTRIM MAXLEN ~` in the writers' pipelines, exported or not). A stream's
  `XDEL` only marks an entry deleted: its bytes stay in the stream's node until the node is
  emptied, as SQLite's deleted rows stay in free pages.
* An event id logged under two customers who are then merged stays twice in the log (SQLite
  keeps one); a touchpoint's event ids are unique, so this does not happen in practice.
* A failover to a replica that had not yet received the latest writes loses them, from the
  log as from the profiles (Redis replicates asynchronously). If the order already had them,
  the shard's counter is behind the order's cursor: the next ordering sees it, logs a warning
  and raises the counter, but entries logged in between reuse seqs already ordered and are not
  read. Run with `min-replicas-to-write` where that matters.
* The order's blocks live in one slot, a handful of bytes per block.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis.cluster import ClusterNode, RedisCluster

from engine.decision import Decision
from feature_store.base import LogPage, LogRecord, LogTable
from feature_store.errors import StoreError
from feature_store.redis.codec import (
    as_bytes,
    decode_document,
    event_log_body,
    log_entry_event_id,
    microseconds,
)
from feature_store.redis.connection import Command, ScriptCall, pipelined, translated_errors
from feature_store.redis.identity import MAX_ALIAS_HOPS, RedisAccess
from feature_store.redis.scripts import READ_LOG_COUNTERS

logger = logging.getLogger(__name__)

#: The counter field of each log in a shard's counters.
_COUNTER = {"events": "e", "decisions": "d"}
#: Blocks asked for at a time (each holds at least one entry).
_BLOCKS_PER_READ = 1000
_HEX_DIGITS = "0123456789abcdef"
#: Entries read, and customers trimmed, at a time when an export is acknowledged.
_TRIM_PAGE = 5000


@dataclass(frozen=True, slots=True)
class Appended:
    """Where `append_decision` appended a decision: its customer (the survivor, if it was
    merged) and seq in that customer's shard, 0 if it was logged before."""

    customer_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class _Block:
    """One shard's entries with seqs in (`after`, `last`], numbered in the log from `base`."""

    shard: int
    after: int
    last: int
    base: int

    @property
    def end(self) -> int:
        """The log seq of the block's last entry."""
        return self.base + self.last - self.after - 1

    def log_seq(self, shard_seq: int) -> int:
        return self.base + shard_seq - self.after - 1

    def shard_seq(self, log_seq: int) -> int:
        return log_seq - self.base + self.after + 1


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    fields: dict[bytes, bytes]


class RedisLog:
    """The logs of `RedisStore`: decisions appended to them, and pages read in order (see the
    module docstring; events are appended by the store's commit)."""

    def __init__(self, access: RedisAccess) -> None:
        self.access = access
        self.keys = access.keys

    # -- writes --------------------------------------------------------------------------------

    def append_decision(self, decision: Decision, stored: bytes) -> Appended:
        """Append the decision (`stored`: its bytes as `rp:dec:<id>` holds them) to the log of
        its customer, or of the survivor if it was merged, unless it is logged there already;
        index it there if the store holds the customer."""
        customer_id = decision.customer_id
        ttl_ms = self.access.redis_config.decision_ttl_seconds * 1000
        decided_at = microseconds(decision.decided_at)
        for _ in range(MAX_ALIAS_HOPS):
            keys = self.keys.customer(customer_id)
            shard = self.keys.customer_log_shard(customer_id)
            indexes = (keys.alias, keys.profile, keys.identities, keys.decisions, keys.decision_log)
            outcome, value = self.access.run(
                "LOG_DECISION",
                [*indexes, shard.decisions, shard.counters],
                [decision.decision_id, ttl_ms, customer_id, decided_at, stored],
            )
            if outcome == b"logged":
                return Appended(customer_id, int(value))
            customer_id = as_bytes(value).decode()  # merged: logged under the survivor
        raise StoreError(f"more than {MAX_ALIAS_HOPS} merges lead from a customer")

    def take_back(self, decision_id: str, appended: Appended) -> None:
        """Remove what `append_decision` appended (the decision id was another's)."""
        if not appended.seq:
            return
        keys = self.keys.customer(appended.customer_id)
        shard = self.keys.customer_log_shard(appended.customer_id)
        self.access.run(
            "UNLOG_DECISION", [keys.decision_log, shard.decisions], [decision_id, appended.seq]
        )

    # -- reads ---------------------------------------------------------------------------------

    def read(self, log: LogTable, after: int, limit: int) -> LogPage:
        """See `OnlineStore.read_log`. Orders what the shards gained when the ordered log has
        fewer than `limit` entries after `after`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        found: list[_Entry] = []
        position, ordered, high_water = after, False, 0
        while len(found) < limit:
            high_water, blocks = self._blocks(log, position, limit - len(found))
            if not blocks:
                if ordered:
                    break
                self._order(log)
                ordered = True
                continue
            position = self._read_blocks(log, blocks, position, limit, found)
        records = self._records(log, found)
        return LogPage(
            records=records,
            next_after=records[-1].seq if records else after,
            high_water=high_water,
        )

    def acknowledge(self, log: LogTable, cursor: int) -> None:
        """Drop the entries of `log` with log seqs up to `cursor` from their shards' streams
        (`XTRIM MINID`, one pipelined round trip) and the blocks of the order that held only
        those (see `OnlineStore.acknowledge_export`)."""
        order = self.keys.log_order(log)
        with translated_errors():
            flat: list[tuple[bytes, float]] = self.access.client().zrange(  # type: ignore[assignment]
                order.blocks, "-inf", cursor, byscore=True, withscores=True
            )
        floors: dict[int, int] = {}
        finished: list[bytes] = []
        for member, base in flat:
            shard, after, last = (int(part) for part in as_bytes(member).split(b":"))
            block = _Block(shard, after, last, int(base))
            floors[shard] = max(floors.get(shard, 0), block.shard_seq(min(cursor, block.end)))
            if block.end <= cursor:
                finished.append(as_bytes(member))
        self._forget_exported(log, floors)
        calls: list[ScriptCall | Command] = [
            ("XTRIM", self.keys.log_shard(shard).stream(log), "MINID", floor + 1)
            for shard, floor in sorted(floors.items())
        ]
        # The last finished block stays: a reader resuming after `cursor` finds its place by it.
        if len(finished) > 1:
            calls.append(("ZREM", order.blocks, *finished[:-1]))
        if calls:
            pipelined(self.access.client(), calls)

    def _forget_exported(self, log: LogTable, floors: dict[int, int]) -> None:
        """Drop the customers' own copies of what is trimmed (`FORGET_EXPORTED`): the events
        from their lists (the survivor's, for a merged customer), the seqs from their indexes.
        Reads the entries about to be trimmed to know whose they are."""
        exported: dict[str, list[str]] = {}  # customer logged under -> event ids
        with translated_errors():
            client = self.access.client()
            for shard, floor in sorted(floors.items()):
                stream, start = self.keys.log_shard(shard).stream(log), "-"
                while True:
                    page: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
                        stream, min=start, max=str(floor), count=_TRIM_PAGE
                    )
                    for _, fields in page:
                        ids = exported.setdefault(as_bytes(fields[b"c"]).decode(), [])
                        if log == "events":
                            ids.append(log_entry_event_id(as_bytes(fields[b"b"])))
                    if len(page) < _TRIM_PAGE:
                        break
                    start = "(" + page[-1][0].decode()
        survivors = self._survivors(set(exported))
        owners: dict[str, tuple[list[int], list[str]]] = {}
        field = 0 if log == "events" else 1
        for customer, ids in exported.items():
            own = owners.setdefault(customer, ([0, 0], []))
            own[0][field] = floors.get(self.keys.log_shard_of(customer), 0)
            owners.setdefault(survivors[customer], ([0, 0], []))[1].extend(ids)
        script = self.access.script("FORGET_EXPORTED")
        calls: list[ScriptCall | Command] = []
        for owner, (owner_floors, ids) in owners.items():
            keys = self.keys.customer(owner)
            script_keys = [keys.events, keys.event_log, keys.decision_log]
            calls.append(ScriptCall(script, script_keys, [*owner_floors, *ids]))
        for first in range(0, len(calls), _TRIM_PAGE):
            pipelined(self.access.client(), calls[first : first + _TRIM_PAGE])

    def erased_digests(self) -> set[str]:
        """Every digest in the erasure records (16 hashes, see `feature_store.redis.privacy`)."""
        with translated_errors():
            pipe = self.access.client().pipeline(transaction=False)
            for digit in _HEX_DIGITS:
                pipe.hkeys(self.keys.erasures(digit))
            shards: list[list[bytes]] = pipe.execute()
        return {as_bytes(digest).decode() for shard in shards for digest in shard}

    def _blocks(self, log: LogTable, position: int, wanted: int) -> tuple[int, list[_Block]]:
        """The log's last seq, and its blocks after `position` that hold at least `wanted`
        seqs, or all of them (at most `_BLOCKS_PER_READ`)."""
        order = self.keys.log_order(log)
        high_water, flat = self.access.run(
            "READ_LOG_ORDER",
            [order.blocks, order.cursors],
            [position + 1, min(wanted, _BLOCKS_PER_READ) + 1],
        )
        blocks: list[_Block] = []
        covered = 0
        for member, base in zip(flat[::2], flat[1::2], strict=True):
            shard, block_after, last = (int(part) for part in as_bytes(member).split(b":"))
            block = _Block(shard, block_after, last, int(float(base)))
            if block.end <= position:
                continue
            blocks.append(block)
            covered += block.end - max(position, block.base - 1)
            if covered >= wanted:
                break
        return int(high_water), blocks

    def _read_blocks(
        self,
        log: LogTable,
        blocks: list[_Block],
        position: int,
        limit: int,
        found: list[_Entry],
    ) -> int:
        """Append to `found` the entries of `blocks` after `position`, up to `limit` in all;
        return the seq up to which the log has been read."""
        count = limit - len(found)
        with translated_errors():
            pipe = self.access.client().pipeline(transaction=False)
            for block in blocks:
                first = block.shard_seq(max(position + 1, block.base))
                stream = self.keys.log_shard(block.shard).stream(log)
                pipe.xrange(stream, min=str(first), max=str(block.last), count=count)
            replies: list[list[tuple[bytes, dict[bytes, bytes]]]] = pipe.execute()
        for block, entries in zip(blocks, replies, strict=True):
            for entry_id, fields in entries:
                shard_seq = int(as_bytes(entry_id).partition(b"-")[0])
                position = block.log_seq(shard_seq)
                found.append(_Entry(position, fields))
                if len(found) == limit:
                    return position
            if len(entries) < count:  # the rest of the block was erased
                position = max(position, block.end)
        return position

    def _records(self, log: LogTable, found: Sequence[_Entry]) -> list[LogRecord]:
        survivors = self._survivors({as_bytes(e.fields[b"c"]).decode() for e in found})
        records = []
        for entry in found:
            customer_id = survivors[as_bytes(entry.fields[b"c"]).decode()]
            stored = as_bytes(entry.fields[b"b"])
            status: str | None = None
            if log == "events":
                body, at_us = event_log_body(customer_id, stored)
                status = as_bytes(entry.fields[b"s"]).decode()
            else:
                body, at_us = decode_document(stored).decode(), int(entry.fields[b"t"])
            records.append(LogRecord(entry.seq, customer_id, at_us, body, status))
        return records

    def _survivors(self, customers: set[str]) -> dict[str, str]:
        """Each customer's survivor: the customer it was merged into, or itself."""
        survivors = {customer: customer for customer in customers}
        following = sorted(customers)
        for _ in range(MAX_ALIAS_HOPS):
            if not following:
                return survivors
            with translated_errors():
                pipe = self.access.client().pipeline(transaction=False)
                for customer in following:
                    pipe.get(self.keys.customer(survivors[customer]).alias)
                aliases: list[Any] = pipe.execute()
            merged = [(c, a) for c, a in zip(following, aliases, strict=True) if a is not None]
            survivors.update((customer, as_bytes(alias).decode()) for customer, alias in merged)
            following = [customer for customer, _ in merged]
        raise StoreError(f"more than {MAX_ALIAS_HOPS} merges lead from a customer")

    def _order(self, log: LogTable) -> None:
        """Append to the log's order the entries its shards gained since it was last ordered."""
        order = self.keys.log_order(log)
        with translated_errors():
            cursors = self.access.client().hgetall(order.cursors)
        ranges: list[int] = []
        for shard, counter in enumerate(self._shard_counters(log)):
            done = int(cursors.get(str(shard).encode(), 0))
            if counter > done:
                ranges += [shard, done, counter]
            elif counter < done:
                self._lost_writes(log, shard, done)
        if ranges:
            self.access.run("ORDER_LOG", [order.blocks, order.cursors], ranges)

    def _lost_writes(self, log: LogTable, shard: int, done: int) -> None:
        """The shard's counter is behind what was ordered of it: it lost writes (a failover to
        a replica that lacked them). Raise it, so its next entries get seqs that nobody ordered
        yet; entries it logged meanwhile, under seqs already ordered, are not read."""
        logger.warning(
            "log shard %d of %s is behind its order (%d): it lost writes", shard, log, done
        )
        counters = self.keys.log_shard(shard).counters
        self.access.run("RAISE_LOG_COUNTER", [counters], [_COUNTER[log], done])

    def _shard_counters(self, log: LogTable) -> list[int]:
        """The last seq given in `log` by each shard (0 for none)."""
        field = _COUNTER[log]
        with translated_errors():
            client = self.access.client()
            if isinstance(client, RedisCluster):
                counters = self._counters_by_node(client, field)
                if counters is not None:
                    return counters
            pipe = client.pipeline(transaction=False)
            for shard in range(self.keys.log_shards):
                pipe.hget(self.keys.log_shard(shard).counters, field)
            return [int(counter or 0) for counter in pipe.execute()]

    def _counters_by_node(self, client: RedisCluster, field: str) -> list[int] | None:
        """The shards' counters read by one script per primary node (`READ_LOG_COUNTERS`), for
        the shards of its slots: a few calls instead of 16,384 commands. None if the slot map
        is incomplete or changed meanwhile: the pipeline, which follows redirections, then."""
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for slot, nodes in client.nodes_manager.slots_cache.items():
            if nodes:
                by_node.setdefault(nodes[0].name, (nodes[0], []))[1].append(slot)
        if sum(len(slots) for _, slots in by_node.values()) != self.keys.log_shards:
            return None
        counters = [0] * self.keys.log_shards
        for node, slots in by_node.values():
            script = client.get_redis_connection(node).register_script(READ_LOG_COUNTERS)
            names = [self.keys.log_shard(slot).counters for slot in slots]
            try:
                found = script(keys=[], args=[field, *names])
            except redis.exceptions.ResponseError:  # a slot moved: "non local key"
                return None
            for slot, counter in zip(slots, found, strict=True):
                counters[slot] = int(counter)
        return counters
