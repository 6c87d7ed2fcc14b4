"""The `OnlineStore` interface: the contract every backend passes (tests/feature_store/)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import StrEnum

from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.profile import Profile


class AppendStatus(StrEnum):
    """What happened to one event handed to `apply_events`."""

    ACCEPTED = "accepted"  # logged and folded into the profile
    DUPLICATE = "duplicate"  # this event_id was seen before: nothing changed
    TOO_LATE = "too_late"  # logged, but older than the profile's idempotence horizon


class OnlineStore(ABC):
    """Profiles, the event log and the decision log of the serving path.

    Implementations are safe to share between threads and between processes (API workers).
    Any method may raise `StoreUnavailable` when the backend cannot be reached.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @abstractmethod
    def read_profile(self, customer_id: str) -> Profile | None:
        """The customer's current profile, or None if no event of theirs was ever folded."""

    @abstractmethod
    def apply_events(self, events: Sequence[Event]) -> list[AppendStatus]:
        """Log and fold `events`; return one status per event, in the order given.

        Per customer the batch is atomic: either all of that customer's new events are logged
        and folded, or none is. It is idempotent by `event_id`: an id seen before (in this batch
        or any earlier one) is a DUPLICATE and changes nothing. Concurrent callers updating the
        same customer never lose an event.
        """

    @abstractmethod
    def customer_events(self, customer_id: str) -> list[Event]:
        """The customer's events held in the online log, in the order they were accepted."""

    @abstractmethod
    def log_decision(self, decision: Decision) -> None:
        """Append a decision to the decision log. Logging the same decision_id twice is an error."""

    @abstractmethod
    def read_decision(self, decision_id: str) -> Decision | None:
        """A logged decision, or None."""

    @abstractmethod
    def population_prior(self) -> ChannelPrior:
        """Channel shares over all customers, from the events folded so far."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers; raise `StoreUnavailable` otherwise."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store must not be used afterwards."""
