"""The `OnlineStore` interface: the contract every backend passes (tests/feature_store/)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.fold import FoldStatus
from engine.identity import HashedIdentity, LinkedIdentity, customer_digest
from engine.profile import Profile
from feature_store.errors import UnsupportedCapability


class AppendStatus(StrEnum):
    """What happened to one event handed to `apply_events`."""

    ACCEPTED = "accepted"  # logged and folded into the profile
    DUPLICATE = "duplicate"  # this event_id was seen before: nothing changed
    TOO_LATE = "too_late"  # logged, but older than the profile's idempotence horizon
    ERASED = "erased"  # the customer was erased: refused, nothing stored


#: What each outcome of the fold (`engine.fold.FoldStatus`) answers for an appended event.
APPEND_STATUS: dict[FoldStatus, AppendStatus] = {
    FoldStatus.APPLIED: AppendStatus.ACCEPTED,
    FoldStatus.DUPLICATE: AppendStatus.DUPLICATE,
    FoldStatus.TOO_LATE: AppendStatus.TOO_LATE,
}


class IdentityLink(BaseModel):
    """The customer that identifiers now resolve to, and the customers merged into it."""

    customer_id: str
    created: bool = Field(description="True if no identifier was known: a new customer.")
    merged: list[str] = Field(default_factory=list, description="Customers merged into it.")


class CustomerExport(BaseModel):
    """Everything the online store holds about one customer (GDPR access and portability)."""

    customer_id: str
    merged_customer_ids: list[str]
    identities: list[LinkedIdentity]
    profile: Profile | None
    events: list[Event]
    decisions: list[Decision]


LogTable = Literal["events", "decisions"]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of the event or decision log, as the store holds it.

    `seq`: the entry's position in its log, strictly increasing and never reused.
    `customer_id`: the customer the entry belongs to now (after merges, the survivor).
    `at_us`: when it happened (`occurred_at` of an event, `decided_at` of a decision), in
    microseconds since the Unix epoch, UTC.
    `body`: the entry as JSON (`Event.model_dump_json()` or `Decision.model_dump_json()`).
    `status`: for an event, the `AppendStatus` it was logged with (`accepted`, `too_late`);
    None for a decision.
    """

    seq: int
    customer_id: str
    at_us: int
    body: str
    status: str | None = None

    def event(self) -> Event:
        """The body as an `Event` (validated), with the entry's current customer."""
        event = Event.model_validate_json(self.body)
        if event.customer_id == self.customer_id:
            return event
        return event.model_copy(update={"customer_id": self.customer_id})

    def decision(self) -> Decision:
        """The body as a `Decision`, with the entry's current customer."""
        decision = Decision.model_validate_json(self.body)
        if decision.customer_id == self.customer_id:
            return decision
        return decision.model_copy(update={"customer_id": self.customer_id})


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of a log. `next_after` is the `after` of the next page (the last `seq` returned,
    or the `after` asked for if the page is empty); `high_water` is the largest `seq` in the
    log when the page was read (0 for an empty log), for progress reports."""

    records: list[LogRecord]
    next_after: int
    high_water: int


class OnlineStore(ABC):
    """Profiles, the event log and the decision log of the serving path.

    Implementations are safe to share between threads and between processes (API workers).
    Any method may raise `StoreUnavailable` when the backend cannot be reached.
    """

    #: How long `population_prior()` reuses what it read, in seconds (0: every call reads).
    #: The API's worker cache refreshes every 0.5 s on top of it: counts at most ~1 s old.
    prior_ttl_seconds: float = 0.5

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._prior: tuple[float, ChannelPrior] | None = None

    @abstractmethod
    def read_profile(self, customer_id: str) -> Profile | None:
        """The customer's current profile, or None if no event of theirs was ever folded.

        A customer merged into another (see `link_identities`) reads as the surviving one.
        """

    @abstractmethod
    def apply_events(self, events: Sequence[Event]) -> list[AppendStatus]:
        """Log and fold `events`; return one status per event, in the order given.

        Per customer the batch is atomic: either all of that customer's new events are logged
        and folded, or none is. It is idempotent by `event_id`: an id seen before (in this batch
        or any earlier one) is a DUPLICATE and changes nothing. Concurrent callers updating the
        same customer never lose an event. Events of a merged customer go to the survivor;
        events of an erased customer are ERASED and nothing of them is stored.
        """

    @abstractmethod
    def customer_events(self, customer_id: str) -> list[Event]:
        """The customer's events held in the online log, in the order they were accepted."""

    @abstractmethod
    def log_decision(self, decision: Decision) -> None:
        """Append a decision to the decision log. Logging the same decision_id twice is an error."""

    def record_decision(self, decision: Decision, delivered: Sequence[Event]) -> None:
        """Log `decision` and apply `delivered` (its actions, as delivered: they count toward
        caps). Backends that can should do both in one atomic step, as SQLite does."""
        self.log_decision(decision)
        if delivered:
            self.apply_events(delivered)

    @abstractmethod
    def read_decision(self, decision_id: str) -> Decision | None:
        """A logged decision, or None."""

    def population_prior(self) -> ChannelPrior:
        """Channel shares over all customers, from the events folded so far. Cached in the
        instance for `prior_ttl_seconds` (monotonic clock): the shares change slowly. Two
        threads may both refresh after expiry; both compute the same prior, so no lock."""
        now = time.monotonic()
        cached = self._prior
        if cached is not None and now < cached[0]:
            return cached[1]
        prior = ChannelPrior.from_counts(self.population_counts())
        self._prior = (now + self.prior_ttl_seconds, prior)
        return prior

    @abstractmethod
    def population_counts(self) -> dict[str, dict[str, float]]:
        """The population counters, read from the store: dimension -> channel -> count."""

    @abstractmethod
    def resolve_identity(self, identity: HashedIdentity) -> str | None:
        """The customer an identifier is linked to, or None."""

    @abstractmethod
    def link_identities(
        self, identities: Sequence[HashedIdentity], customer_id: str | None, *, at: datetime
    ) -> IdentityLink:
        """Link identifiers to one customer, atomically.

        The survivor is `customer_id` if given, else the smallest id among the customers the
        identifiers already resolve to, else a new customer. Every other customer they
        resolve to is merged into the survivor: profiles through `engine.merge.merge`, and
        events, decisions and identifiers moved. Raises CustomerErased for an erased survivor.
        """

    @abstractmethod
    def export_customer(self, customer_id: str) -> CustomerExport | None:
        """Everything held about the customer, or None if nothing is (unknown or erased)."""

    @abstractmethod
    def erase_customer(self, customer_id: str) -> bool:
        """Remove everything held about the customer (and customers merged into it): profile,
        identifiers, events, decisions, dedup state. Record the erasure as a digest of the id,
        without personal data, so replayed events cannot bring the customer back. Idempotent;
        returns True if anything was removed.
        """

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers; raise `StoreUnavailable` otherwise."""

    # -- optional capabilities: the offline export reads the logs through these -----------------

    def read_log(self, table: LogTable, after: int, limit: int) -> LogPage:
        """Up to `limit` (>= 1) entries of the `table` log with `seq > after`, in `seq` order.

        The log is a cursor-readable append-only sequence: an entry appended after a page was
        read always gets a larger `seq` than every entry that page could have returned, so a
        reader that resumes from `next_after` misses nothing and sees nothing twice. Entries
        can disappear (erasure removes them) and can change customer without a new `seq` (a
        merge moves them to the survivor). Raises `UnsupportedCapability` if the backend
        cannot read its logs in order (the default).
        """
        raise UnsupportedCapability(f"{type(self).__name__} cannot read its logs (read_log)")

    def acknowledge_export(self, table: LogTable, cursor: int) -> None:  # noqa: B027 - optional
        """The offline store has saved every entry of the `table` log with `seq <= cursor`
        (`feature_store.offline.export` calls this after saving its cursor): a backend may drop
        them from its online log. Reading them again (`read_log`) may then return nothing for
        that range; `GET /v1/customers/{id}/export` reads them back from the offline store. The
        default keeps everything."""

    def list_customers(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` (>= 1) ids of customers with events in the online log, in id order,
        each greater than `after` (from the first with None). Merged customers list as their
        survivor; erased ones not at all.

        The default reads the whole event log through `read_log` (O(events) per page, fine
        for a demo or a small store); a backend with a customer index should override it.
        Raises `UnsupportedCapability` if the backend cannot read its log.
        """
        customers: set[str] = set()
        cursor = 0
        while True:
            page = self.read_log("events", cursor, 1000)
            customers.update(
                record.customer_id
                for record in page.records
                if after is None or record.customer_id > after
            )
            if not page.records:
                break
            cursor = page.next_after
        return sorted(customers)[:limit]

    def is_erased(self, customer_id: str) -> bool:
        """Whether `customer_id` was erased (its digest is in the erasure records). The default
        lists every record (`erased_digests`); backends answer from one key or one row."""
        return customer_digest(customer_id) in self.erased_digests()

    def erased_digests(self) -> set[str]:
        """The digests (`engine.identity.customer_digest`) of every erased customer id, merged
        ids included. Erasure records are never removed, so the set only grows. Raises
        `UnsupportedCapability` if the backend cannot list them (the default).
        """
        raise UnsupportedCapability(
            f"{type(self).__name__} cannot list its erasure records (erased_digests)"
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store must not be used afterwards."""
