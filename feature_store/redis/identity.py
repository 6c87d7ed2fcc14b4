"""Identity links and merges of the Redis store, on one server or a cluster.

Key layout: `feature_store.keys`. A customer's keys share a hash tag, so every per-customer
update is one single-slot script; an identifier (`rp:id:{<type>:<digest>}`) lives in a slot of
its own. Merging two customers changes two slots, which nothing in Redis Cluster does
atomically, so a merge is a sequence of single-slot steps, each safe to repeat, in an order
chosen so that a failed step, or a process that dies between two steps, loses no event,
counts none twice, and leaves a state that the next caller completes.

Leases. Linking and erasing (`feature_store.redis.privacy`) change several customers; each
holds a lease (`rp:{<c>}:l`, SET NX PX, `LEASE_SECONDS`) on every customer it changes, taken
all at once in id order, or none. Leases serialise links and erasures of the same customers;
event writes never take one. A holder that dies is succeeded once its lease expires.

Merge of customer A into survivor S (both leased):

1. `INTEND_MERGE` (S's slot) adds A to S's pending set. From then on S's commits are refused
   (`COMMIT` checks the set is empty) and a writer of S that finds an intent completes it
   (`settle`): S accepts no event, e.g. a resend of one of A's, before A's dedup ids are in S.
2. `MOVE_OUT` (A's slot), atomically: sets A's alias to S and renames A's profile, log, dedup
   set, identifier and decision indexes and merged set to outgoing keys, still in A's slot.
   A writer of A that read before this commits nothing (`COMMIT` sees the alias) and reads
   again; every later read or write of A follows the alias to S.
3. The identifiers and aliases that named A are repointed to S (each a conditional one-key
   script, so it never undoes a later relink).
4. `MERGE_IN` (S's slot) takes the outgoing state over with S's own check-and-set: the
   profiles combine through `engine.merge.merge` against S's current profile (recomputed on a
   conflict), A's events are appended to S's log unless S's dedup window holds their id, A's
   dedup ids, identifiers, decisions and merged customers join S's, and A joins S's merged
   set: all or nothing, and exactly once (a repeat finds A merged and does nothing).
5. The outgoing keys are deleted; A's slot keeps only its alias, and the indexes of its
   entries in the logs (they stay in A's slot's log shard: `feature_store.redis.log`).
6. A leaves S's pending set, and S takes events again.

A process that dies anywhere after step 1 leaves the intent. The next link, erasure or export
of S, or the next event for S, or for A once it is moved, repeats steps 2-6 (each idempotent);
until then S refuses events (a 503 that the touchpoint retries) rather than risk counting one
twice. Between steps 2 and 4 a read of A or S shows S without A's history yet.

What leases do not cover: a holder paused for longer than `LEASE_SECONDS` (stop-the-world,
swap) can overlap with the next holder. Events stay safe (steps 2 and 4 are atomic checks, and
a step that finds A merged elsewhere withdraws the intent), but a link and an erasure of the
same customer could interleave and leave keys behind; erasing again removes them.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.commands.core import Script

from engine.config import EngineConfig
from engine.identity import HashedIdentity, customer_digest
from engine.merge import merge
from feature_store.base import IdentityLink
from feature_store.errors import CustomerErased, StoreError, StoreUnavailable
from feature_store.keys import KeyLayout, identity_reference
from feature_store.redis.codec import (
    as_bytes,
    decode_profile,
    encode_profile,
    log_entry_event_id,
    profile_version,
)
from feature_store.redis.connection import RedisClient, translated_errors

if TYPE_CHECKING:
    from feature_store.redis.config import RedisStoreConfig

#: How long a link or an erasure may hold a customer, and wait for one, in seconds.
LEASE_SECONDS = 10.0
LEASE_WAIT_SECONDS = 3.0
#: Alias hops followed (merges repoint aliases, so one is the rule; more after a failure).
MAX_ALIAS_HOPS = 8
#: Attempts of a link or an erasure whose customers changed under it, before a 503.
ATTEMPTS = 5
RETRY_AFTER_BUSY = 1.0


@dataclass(frozen=True)
class RedisAccess:
    """What the identity and privacy parts of the store use: its client, scripts and keys."""

    client: Callable[[], RedisClient]
    script: Callable[[str], Script]
    keys: KeyLayout
    config: EngineConfig
    redis_config: RedisStoreConfig

    def run(self, name: str, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        with translated_errors():
            return self.script(name)(keys=list(keys), args=list(args))

    def is_erased(self, customer_id: str) -> bool:
        digest = customer_digest(customer_id)
        with translated_errors():
            return bool(self.client().hexists(self.keys.erasures(digest), digest))


@dataclass(frozen=True)
class _LinkPlan:
    """Who the identifiers belong to now, and what linking them does."""

    owners: dict[str, str]  # identity reference -> stored owner ('' if none)
    survivor: str
    created: bool
    merged: list[str]


@dataclass(frozen=True)
class _Moved:
    """A merged customer's state set aside by `MOVE_OUT`, for the survivor to take over."""

    profile: bytes | None
    entries: list[bytes]
    dedup: list[list[str]]  # [bucket expiry (Unix ms), its digests in hex]
    identities: list[str]
    decisions: list[list[str]]  # [decision id, expiry (Unix ms)]
    merged: list[str]


class RedisIdentities:
    """Identifiers, aliases and merges of `RedisStore` (see the module docstring)."""

    def __init__(self, access: RedisAccess) -> None:
        self.access = access
        self.keys = access.keys
        self._rng = random.Random()

    def resolve(self, identity: HashedIdentity) -> str | None:
        reference = identity_reference(identity.type.value, identity.digest)
        with translated_errors():
            owner = self.access.client().hget(self.keys.identity(reference), "c")
        return None if owner is None else as_bytes(owner).decode()

    def canonical(self, customer_id: str) -> str:
        """The customer that `customer_id` was merged into, or itself."""
        for _ in range(MAX_ALIAS_HOPS):
            with translated_errors():
                alias = self.access.client().get(self.keys.customer(customer_id).alias)
            if alias is None:
                return customer_id
            customer_id = as_bytes(alias).decode()
        raise StoreError(f"more than {MAX_ALIAS_HOPS} merges lead from a customer")

    # -- links ---------------------------------------------------------------------------------

    def link(
        self, identities: Sequence[HashedIdentity], customer_id: str | None, *, at: datetime
    ) -> IdentityLink:
        """See `OnlineStore.link_identities`; the survivor is chosen as SQLite chooses it."""
        for _ in range(ATTEMPTS):
            plan = self._plan(identities, customer_id, new_id=None)
            if set(plan.owners.values()) == {plan.survivor}:  # the usual case: linked already
                return IdentityLink(customer_id=plan.survivor, created=False, merged=[])
            for customer in (plan.survivor, *plan.merged):
                self.settle(customer)
            with self.leases([plan.survivor, *plan.merged]):
                new_id = plan.survivor if plan.created else None
                if self._plan(identities, customer_id, new_id=new_id) != plan:
                    continue  # relinked or merged meanwhile: plan again
                for absorbed in plan.merged:
                    self._intend(absorbed, plan.survivor)
                    self._absorb(absorbed, plan.survivor)
                if self._claim(identities, plan, at):
                    return IdentityLink(
                        customer_id=plan.survivor, created=plan.created, merged=plan.merged
                    )
        raise StoreUnavailable(
            "the identifiers were relinked concurrently; retry", retry_after=RETRY_AFTER_BUSY
        )

    def _plan(
        self, identities: Sequence[HashedIdentity], customer_id: str | None, new_id: str | None
    ) -> _LinkPlan:
        owners = {
            identity_reference(i.type.value, i.digest): self.resolve(i) or "" for i in identities
        }
        known = {self.canonical(owner) for owner in owners.values() if owner}
        if customer_id is not None:
            survivor, created = self.canonical(customer_id), False
        elif known:
            survivor, created = min(known), False
        else:
            survivor, created = new_id or f"cust_{uuid.uuid4().hex[:20]}", True
        if not created and self.access.is_erased(survivor):
            raise CustomerErased(survivor)
        return _LinkPlan(owners, survivor, created, sorted(known - {survivor}))

    def _claim(self, identities: Sequence[HashedIdentity], plan: _LinkPlan, at: datetime) -> bool:
        """Link each identifier to the survivor unless someone relinked it since the plan."""
        index = self.keys.customer(plan.survivor).identities
        for identity in identities:
            reference = identity_reference(identity.type.value, identity.digest)
            with translated_errors():  # indexed first: an erasure finds what it indexes
                self.access.client().sadd(index, reference)
            claimed = self.access.run(
                "CLAIM_IDENTITY",
                [self.keys.identity(reference)],
                [plan.owners[reference], plan.survivor, identity.masked, at.isoformat()],
            )
            if not claimed:
                with translated_errors():  # someone else's now (an emptied set is deleted)
                    self.access.client().srem(index, reference)
                return False
        return True

    # -- merges --------------------------------------------------------------------------------

    def settle(self, customer_id: str, depth: int = 0) -> None:
        """Complete the merges into `customer_id` that are under way or were interrupted."""
        pending = self.pending(customer_id)
        if not pending:
            return
        if depth < MAX_ALIAS_HOPS:
            for absorbed in pending:
                self.settle(absorbed, depth + 1)
        with self.leases([customer_id, *pending]):
            for absorbed in sorted(set(pending) & set(self.pending(customer_id))):
                self._absorb(absorbed, customer_id)

    def pending(self, customer_id: str) -> list[str]:
        """The customers being merged into `customer_id` (intents not completed yet)."""
        with translated_errors():
            members = self.access.client().smembers(self.keys.customer(customer_id).pending)
        return sorted(as_bytes(member).decode() for member in members)

    def _intend(self, absorbed: str, survivor: str) -> None:
        """Step 1 (module docstring)."""
        keys = self.keys.customer(survivor)
        if self.access.run("INTEND_MERGE", [keys.alias, keys.pending], [absorbed]) != 0:
            raise StoreUnavailable(
                f"customer {survivor!r} was merged during the link; retry",
                retry_after=RETRY_AFTER_BUSY,
            )

    def _absorb(self, absorbed: str, survivor: str) -> None:
        """Steps 2-6 of a merge whose intent is recorded (module docstring)."""
        pending = self.keys.customer(survivor).pending
        if not self._move_out(absorbed, survivor):
            with translated_errors():  # merged elsewhere by a link whose lease had expired
                self.access.client().srem(pending, absorbed)
            return
        moved = self._moved(absorbed)
        for reference in moved.identities:
            identity = self.keys.identity(reference)
            self.access.run("REPOINT_IDENTITY", [identity], [absorbed, survivor])
        for customer in moved.merged:
            alias = self.keys.customer(customer).alias
            self.access.run("REPOINT_ALIAS", [alias], [absorbed, survivor])
        self._merge_in(survivor, absorbed, moved)
        with translated_errors():
            self.access.client().delete(*self.keys.outgoing(absorbed))
            self.access.client().srem(pending, absorbed)

    def _move_out(self, absorbed: str, survivor: str) -> bool:
        """Step 2: True once `absorbed` points at `survivor`, False if it went elsewhere."""
        keys, outgoing = self.keys.customer(absorbed), self.keys.outgoing(absorbed)
        status = self.access.run(
            "MOVE_OUT", [keys.alias, keys.pending, *keys.movable, *outgoing], [survivor]
        )[0]
        if status == b"busy":
            raise StoreUnavailable(
                f"a merge into {absorbed!r} is pending; retry", retry_after=RETRY_AFTER_BUSY
            )
        return bool(status == b"moved")

    def _moved(self, absorbed: str) -> _Moved:
        profile, entries, dedup, identities, decisions, merged = self.access.run(
            "READ_OUTGOING", self.keys.outgoing(absorbed), []
        )
        return _Moved(
            profile=profile,
            entries=entries,
            dedup=_pairs(dedup),
            identities=texts(identities),
            decisions=_pairs(decisions),
            merged=texts(merged),
        )

    def _merge_in(self, survivor: str, absorbed: str, moved: _Moved) -> None:
        """Step 4, retried on a conflict with the survivor's profile recomputed."""
        keys = self.keys.customer(survivor)
        script_keys = [
            *(keys.profile, keys.events, keys.dedup, keys.identities, keys.decisions),
            *(keys.merged, keys.pending, keys.alias),
        ]
        lists = {
            "dedup": moved.dedup,
            "decisions": moved.decisions,
            "identities": moved.identities,
            "merged": moved.merged,
        }
        tail: list[str | bytes | int] = [self.access.redis_config.event_log_cap, json.dumps(lists)]
        for entry in moved.entries:
            tail += [log_entry_event_id(entry), entry]
        for attempt in range(self.access.redis_config.max_commit_attempts):
            with translated_errors():
                stored = self.access.client().get(keys.profile)
            kept = None if stored is None else as_bytes(stored)
            profile = self._merged_profile(survivor, kept, moved.profile)
            args = [profile_version(kept), profile, absorbed, *tail]
            if self.access.run("MERGE_IN", script_keys, args) != 0:
                return
            time.sleep(self._rng.uniform(0, min(0.05, 0.002 * 2**attempt)))
        raise StoreUnavailable("the survivor of a merge kept changing; retry")

    def _merged_profile(self, survivor: str, kept: bytes | None, absorbed: bytes | None) -> bytes:
        """The survivor's profile with the absorbed one merged in; b'' to keep it as it is."""
        if absorbed is None:
            return b""
        theirs = decode_profile(absorbed)
        merged = (
            theirs.model_copy(update={"customer_id": survivor})
            if kept is None
            else merge(
                decode_profile(kept), theirs, customer_id=survivor, config=self.access.config
            )
        )
        return encode_profile(merged, self.access.redis_config.compress_min_bytes)

    # -- leases --------------------------------------------------------------------------------

    @contextmanager
    def leases(self, customers: Sequence[str]) -> Iterator[None]:
        """Hold the lease of every customer, all at once in id order, or raise
        `StoreUnavailable` after `LEASE_WAIT_SECONDS`."""
        locks = [self.keys.customer(customer).lock for customer in sorted(set(customers))]
        token = uuid.uuid4().hex
        deadline = time.monotonic() + LEASE_WAIT_SECONDS
        while not self._acquire(locks, token):
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    "the customer is being linked or erased; retry", retry_after=RETRY_AFTER_BUSY
                )
            time.sleep(self._rng.uniform(0.002, 0.02))
        try:
            yield
        finally:
            self._release(locks, token)

    def _acquire(self, locks: list[str], token: str) -> bool:
        lease_ms = round(LEASE_SECONDS * 1000)
        for taken, lock in enumerate(locks):
            with translated_errors():
                acquired = self.access.client().set(lock, token, nx=True, px=lease_ms)
            if not acquired:
                self._release(locks[:taken], token)
                return False
        return True

    def _release(self, locks: list[str], token: str) -> None:
        for lock in locks:
            self.access.run("RELEASE", [lock], [token])


def texts(values: list[bytes]) -> list[str]:
    return [as_bytes(value).decode() for value in values]


def _pairs(flat: list[bytes]) -> list[list[str]]:
    """A `WITHSCORES` reply, [member, score, ...], as [[member, score], ...]."""
    strings = texts(flat)
    return [[member, score] for member, score in zip(strings[::2], strings[1::2], strict=True)]
