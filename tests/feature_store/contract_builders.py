"""What the store contracts are made of: the events and decisions they write, and the helpers
that write them from several threads or processes (module level: child processes import them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.config import EngineConfig
from engine.decision import ContactChannel, Decision, Default, Reasons
from engine.events import Channel, Event, EventType
from feature_store.base import AppendStatus, OnlineStore
from feature_store.errors import StoreUnavailable

StoreOpener = Callable[[EngineConfig], OnlineStore]
NewBackend = Callable[[], StoreOpener]

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
CONFIG = EngineConfig()
#: Room for every event of the concurrency tests, so none of them is TOO_LATE whatever the
#: interleaving: then event_count must equal the number of events sent.
ROOMY = EngineConfig(seen_capacity=2048)

ACCEPTED, DUPLICATE, TOO_LATE = AppendStatus.ACCEPTED, AppendStatus.DUPLICATE, AppendStatus.TOO_LATE


# -- event builders ----------------------------------------------------------------------------


def withdrawal(
    event_id: str,
    *,
    customer_id: str = "cust-1",
    at: datetime = T0,
    amount: int = 200,
    receipt: bool = False,
    channel: str = "atm",
) -> Event:
    """A cash withdrawal at an ATM (or at `channel`), e.g. 200 EUR without a receipt."""
    return Event(
        event_id=event_id,
        customer_id=customer_id,
        touchpoint=f"{channel}-0042",
        channel=Channel(channel),
        type=EventType.REQUEST,
        occurred_at=at,
        attributes={
            "request": "cash_withdrawal",
            "amount": amount,
            "currency": "EUR",
            "receipt": receipt,
        },
    )


def contact(
    event_id: str, channel: str, *, customer_id: str = "cust-1", at: datetime = T0
) -> Event:
    """The customer reached out by `channel` (e.g. "sms", "email")."""
    return event_of(event_id, customer_id, "contact", channel, at, {"topic": "card_limit"})


def event_of(
    event_id: str, customer_id: str, type_: str, channel: str, at: datetime, attributes: Any
) -> Event:
    return Event(
        event_id=event_id,
        customer_id=customer_id,
        touchpoint=f"{channel}-0042",
        channel=Channel(channel),
        type=EventType(type_),
        occurred_at=at,
        attributes=attributes,
    )


def varied_history(customer_id: str = "cust-1") -> list[Event]:
    """Forty events of every kind the fold learns from, spread over ten weeks."""
    events: list[Event] = []
    for i in range(40):
        at = T0 + timedelta(days=(i * 37) % 70, minutes=i)
        kind = i % 5
        event_id = f"h-{i}"
        if kind in (0, 1):
            events.append(
                withdrawal(event_id, customer_id=customer_id, at=at, amount=[200, 50][i % 2])
            )
        elif kind == 2:
            events.append(
                contact(
                    event_id, ["sms", "email", "call_center"][i % 3], customer_id=customer_id, at=at
                )
            )
        elif kind == 3:
            events.append(event_of(event_id, customer_id, "feedback", "web", at, {"score": i % 11}))
        else:
            value = ["sms", "email"][i % 2]
            attributes = {"key": "contact_channel", "value": value}
            events.append(
                event_of(event_id, customer_id, "preference_stated", "web", at, attributes)
            )
    return events


def unfoldable(event_id: str, customer_id: str = "cust-1") -> Event:
    """A request built without validation, as a buggy caller could hand over: the fold raises.

    It is the one legitimate way, without mocking the store, to make a batch fail after the
    backend has started its write; see test_a_batch_that_fails_leaves_nothing_behind.
    """
    return Event.model_construct(
        event_id=event_id,
        customer_id=customer_id,
        touchpoint="atm-0042",
        channel=Channel.ATM,
        type=EventType.REQUEST,
        occurred_at=T0,
        attributes={},
    )


def decision(decision_id: str, customer_id: str = "cust-1") -> Decision:
    reasons = Reasons(en="8 of your last 10 withdrawals", it="8 dei tuoi ultimi 10 prelievi")
    return Decision(
        decision_id=decision_id,
        customer_id=customer_id,
        touchpoint="atm-0042",
        touchpoint_channel="atm",
        decided_at=T0,
        known_customer=True,
        defaults=[
            Default(
                id="default:cash_withdrawal",
                request="cash_withdrawal",
                channel="atm",
                values={"amount": 200, "currency": "EUR", "receipt": False},
                confidence=0.8,
                reasons=reasons,
                matches=8,
                window=10,
                signature="amount=200;currency='EUR';receipt=False",
            )
        ],
        channel=ContactChannel(
            channel="sms", source="learned", probability=0.7, confidence=0.6, reasons=reasons
        ),
        policy_version="rules-1",
        model_version="als-3",
        context={"request": "cash_withdrawal"},
    )


def exposure(decision_id: str, customer_id: str) -> Event:
    """The delivery of the decision's action `savings_plan`, as the decision path records it."""
    return Event(
        event_id=f"exposure:{decision_id}:savings_plan",
        customer_id=customer_id,
        touchpoint="web-1",
        channel=Channel.EMAIL,
        type=EventType.ACTION_EXPOSED,
        occurred_at=T0,
        attributes={
            "decision_id": decision_id,
            "action_id": "savings_plan",
            "delivery_channel": "email",
            "purpose": "marketing",
            "segment": "premium",
        },
    )


# -- concurrency helpers ---------------------------------------------------------------------


def concurrent_events(worker: int, count: int, customer_id: str = "cust-1") -> list[Event]:
    """`count` distinct withdrawals of one worker, at times no other worker uses."""
    return [
        withdrawal(
            f"w{worker}-{i}", customer_id=customer_id, at=T0 + timedelta(seconds=i * 64 + worker)
        )
        for i in range(count)
    ]


def apply_one_by_one(store: OnlineStore, events: Sequence[Event]) -> list[AppendStatus]:
    """Like touchpoints sending one event per request, and retrying when told to (a 503).

    Waiting writers are not served in order (SQLite's busy handler polls), so under this load
    a write may time out; the contract allows that, provided nothing is lost or doubled.
    """
    return [status for event in events for status in _apply_retrying(store, event)]


def _apply_retrying(store: OnlineStore, event: Event) -> list[AppendStatus]:
    deadline = time.monotonic() + 120
    while True:
        try:
            return store.apply_events([event])
        except StoreUnavailable as unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(min(unavailable.retry_after, 0.05))


def process_worker(opener: StoreOpener, worker: int, count: int, start: Any) -> None:
    """Run in a child process: open the store, wait for the others, apply events one by one.

    A TOO_LATE or an error fails the child (exit code 1, traceback on stderr).
    """
    with closing(opener(ROOMY)) as store:
        start.wait(timeout=60)
        statuses = apply_one_by_one(store, concurrent_events(worker, count))
    assert TOO_LATE not in statuses, f"worker {worker}"
