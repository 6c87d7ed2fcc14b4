"""Export and erasure of the Redis store, and the index of decisions they rely on.

Erasure records (`rp:erased:<h>`, 16 hashes sharded by the first hex digit of the digest, so
the check that every new customer's first event makes spreads over the cluster's nodes) hold
`engine.identity.customer_digest(id)` -> erased at: no customer id, nothing personal, and
outside every customer's hash tag, so a SCAN over the tag finds nothing after an erasure.

Erasure of C, with its survivor S leased (`feature_store.redis.identity`), once the merges
into S under way are settled:

1. record the digests of C and S;
2. read what S holds (identifiers, decisions, merged customers) and record the digests of the
   merged customers;
3. delete the identifiers, then the decisions, then the merged customers' slots (their
   aliases and log entries), then S's slot. An index is deleted after what it indexes, so a
   repeat after a failure finds the rest; erasing again is always safe (idempotent). A
   customer's log entries (in its slot's log shard, `feature_store.redis.log`) are deleted
   with its keys in one script, so no commit can log an entry between the two.

Event writers take no lease. They read the customer (one script), check the erasure record
only if it has no profile, and commit conditioned on the profile they read. A writer racing an
erasure either finds the record, or commits before the profile is deleted (and is deleted with
it), or fails its check (the profile is gone) and reads again. The one residual window is a
customer with no profile at all: a writer that checked the record before step 1 can commit a
new profile after step 3. So a writer that created a profile checks the record again after its
commit and, if the customer was erased meanwhile, erases it again and reports ERASED: only a
writer that dies between its commit and that check can leave such a profile behind.

Decisions live at `rp:dec:<id>` (looked up by id alone); each is also indexed in its
customer's slot (`rp:{<c>}:x`, id -> expiry, pruned as decisions expire) before it is written,
so an erasure finds every decision that was written. A decision for an id the store holds
nothing of (an anonymous one, or an erased one) is not indexed: it only expires. So is one
logged while its customer is being erased, if it is indexed after the erasure read the index.
The decision log (`rp:{<c>}:ld` and its shard, appended in the same script as the index) holds
every decision, indexed or not, until its customer is erased; a decision logged for a customer
after their erasure stays in the log, as in SQLite (the offline export leaves it out).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from engine.decision import Decision
from engine.identity import LinkedIdentity, customer_digest
from feature_store.base import CustomerExport
from feature_store.errors import StoreUnavailable
from feature_store.keys import split_identity_reference
from feature_store.redis.codec import as_bytes, decode_document, decode_log_entry, decode_profile
from feature_store.redis.connection import translated_errors
from feature_store.redis.identity import (
    ATTEMPTS,
    RETRY_AFTER_BUSY,
    RedisAccess,
    RedisIdentities,
    texts,
)


@dataclass(frozen=True)
class _Held:
    """What the store holds of one customer, as `READ_CUSTOMER` returns it."""

    profile: bytes | None
    events: list[bytes]
    identities: list[str]
    decisions: list[str]
    merged: list[str]

    @property
    def empty(self) -> bool:
        return self.profile is None and not (self.events or self.identities or self.decisions)


class RedisPrivacy:
    """Export, erasure and the decision index of `RedisStore` (see the module docstring)."""

    def __init__(self, access: RedisAccess, identities: RedisIdentities) -> None:
        self.access = access
        self.keys = access.keys
        self.identities = identities

    def export(self, customer_id: str) -> CustomerExport | None:
        """See `OnlineStore.export_customer`; completes a merge under way first."""
        if self.access.is_erased(customer_id):
            return None
        survivor = self.identities.canonical(customer_id)
        self.identities.settle(survivor)
        held = self._held(survivor)
        if held.empty:
            return None
        everyone = {survivor, *held.merged}
        decisions = self._decisions(held.decisions, everyone).values()
        return CustomerExport(
            customer_id=survivor,
            merged_customer_ids=sorted(held.merged),
            identities=self._linked_identities(survivor, held.identities, everyone),
            profile=None if held.profile is None else decode_profile(held.profile),
            events=[decode_log_entry(survivor, entry) for entry in held.events],
            decisions=sorted(decisions, key=lambda d: (d.decided_at, d.decision_id)),
        )

    def erase(self, customer_id: str) -> bool:
        """See `OnlineStore.erase_customer`, and the module docstring for the order of steps."""
        at = datetime.now(UTC).isoformat()
        for _ in range(ATTEMPTS):
            survivor = self.identities.canonical(customer_id)
            self.identities.settle(survivor)
            with self.identities.leases([survivor]):
                if self.identities.canonical(customer_id) != survivor:
                    continue  # merged meanwhile: erase the new survivor
                if self.identities.pending(survivor):
                    continue  # a link began a merge meanwhile: settle it first
                self._record({customer_id, survivor}, at)
                held = self._held(survivor)
                everyone = {customer_id, survivor, *held.merged}
                self._record(everyone, at)
                return self._forget(survivor, held, everyone) > 0
        raise StoreUnavailable(
            "the customer was relinked during its erasure; retry", retry_after=RETRY_AFTER_BUSY
        )

    def _record(self, customers: set[str], at: str) -> None:
        with translated_errors():
            client = self.access.client()
            for customer in sorted(customers):
                digest = customer_digest(customer)
                client.hsetnx(self.keys.erasures(digest), digest, at)

    def _forget(self, survivor: str, held: _Held, everyone: set[str]) -> int:
        """Delete everything of `everyone`, the indexes last; how many keys were deleted."""
        owners = sorted(everyone)
        removed = 0
        for reference in held.identities:
            identity = self.keys.identity(reference)
            removed += self.access.run("FORGET_IDENTITY", [identity], owners)
        decisions = self._decisions(held.decisions, everyone)
        with translated_errors():
            client = self.access.client()
            for decision_id in decisions:
                removed += client.delete(self.keys.decision(decision_id))
        for customer in [*sorted(everyone - {survivor}), survivor]:
            removed += self._forget_customer(customer)
        return removed

    def _forget_customer(self, customer_id: str) -> int:
        """Delete the customer's log entries and keys, in one script (`FORGET_CUSTOMER`)."""
        keys = self.keys.customer(customer_id)
        shard = self.keys.customer_log_shard(customer_id)
        indexes = (keys.event_log, keys.decision_log)
        others = [key for key in self.keys.every_customer_key(customer_id) if key not in indexes]
        removed: int = self.access.run(
            "FORGET_CUSTOMER", [*indexes, shard.events, shard.decisions, *others], []
        )
        return removed

    def _held(self, customer_id: str) -> _Held:
        keys = self.keys.customer(customer_id)
        profile, events, identities, decisions, merged = self.access.run(
            "READ_CUSTOMER",
            [keys.profile, keys.events, keys.identities, keys.decisions, keys.merged],
            [],
        )
        return _Held(profile, events, texts(identities), texts(decisions), texts(merged))

    def _linked_identities(
        self, survivor: str, references: list[str], everyone: set[str]
    ) -> list[LinkedIdentity]:
        linked = []
        for reference in references:
            with translated_errors():
                stored = self.access.client().hgetall(self.keys.identity(reference))
            fields = {as_bytes(k).decode(): as_bytes(v).decode() for k, v in stored.items()}
            if fields.get("c") not in everyone:  # relinked to someone else since
                continue
            type_, digest = split_identity_reference(reference)
            linked.append(
                LinkedIdentity.model_validate(
                    {"type": type_, "digest": digest, "masked": fields["m"]}
                    | {"customer_id": survivor, "linked_at": fields["t"]}
                )
            )
        return sorted(linked, key=lambda identity: (identity.type.value, identity.masked))

    def _decisions(self, decision_ids: list[str], everyone: set[str]) -> dict[str, Decision]:
        """The indexed decisions still logged that are of one of `everyone`."""
        found = {}
        for decision_id in decision_ids:
            with translated_errors():
                stored = self.access.client().get(self.keys.decision(decision_id))
            if stored is None:
                continue
            decision = Decision.model_validate_json(decode_document(as_bytes(stored)))
            if decision.customer_id in everyone:
                found[decision_id] = decision
        return found
