"""The contract every `OnlineStore` passes, run against the real backend (no mocks).

A backend's test module subclasses `OnlineStoreContract` and provides one fixture, `new_backend`:
a callable that creates an empty backend of its own (a new file, a new database) and returns a
`StoreOpener` for it. The opener opens another handle on that same backend each time it is
called, with `population_prior()` uncached (TTL 0); it must be picklable, because the
multi-process test calls it in child processes.

The suite includes the logs' contract (`read_log`, `erased_digests`: tests/feature_store/
contract_logs.py). Its builders of events and decisions are in contract_builders.py, and
importable from here too.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta

import pytest

from engine.config import EngineConfig
from engine.events import Channel, Event, EventType
from engine.fold import fold
from engine.profile import Profile
from feature_store.base import AppendStatus, OnlineStore
from feature_store.errors import DuplicateDecision, StoreUnavailable
from tests.feature_store.contract_builders import (
    ACCEPTED,
    CONFIG,
    DUPLICATE,
    ROOMY,
    T0,
    TOO_LATE,
    NewBackend,
    StoreOpener,
    apply_one_by_one,
    concurrent_events,
    contact,
    decision,
    event_of,
    process_worker,
    unfoldable,
    varied_history,
    withdrawal,
)
from tests.feature_store.contract_logs import LogContract

__all__ = [
    "ACCEPTED",
    "CONFIG",
    "DUPLICATE",
    "ROOMY",
    "T0",
    "TOO_LATE",
    "NewBackend",
    "OnlineStoreContract",
    "StoreOpener",
    "apply_one_by_one",
    "assert_profiles_close",
    "concurrent_events",
    "contact",
    "decision",
    "event_of",
    "profile_json",
    "varied_history",
    "withdrawal",
]

# -- comparisons -------------------------------------------------------------------------------


def assert_profiles_close(
    actual: Profile | None, expected: Profile | None, rel: float = 1e-9
) -> None:
    """Profiles equal field by field, floats up to `rel` (decayed counts round differently)."""
    assert actual is not None
    assert expected is not None
    _assert_close(actual.model_dump(), expected.model_dump(), rel, "profile")


def _assert_close(actual: object, expected: object, rel: float, where: str) -> None:
    if isinstance(expected, float) and isinstance(actual, float):
        assert math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-12), where
    elif isinstance(expected, dict) and isinstance(actual, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            _assert_close(actual[key], expected[key], rel, f"{where}.{key}")
    elif isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, rel, f"{where}[{index}]")
    else:
        assert actual == expected, where


def profile_json(store: OnlineStore, customer_id: str) -> str | None:
    profile = store.read_profile(customer_id)
    return None if profile is None else profile.model_dump_json()


class OnlineStoreContract(LogContract):
    """The shared suite. Subclasses provide the `new_backend` fixture (see the module docstring)."""

    @pytest.fixture
    def new_backend(self) -> NewBackend:
        raise NotImplementedError("a backend's test class provides the new_backend fixture")

    @pytest.fixture
    def store_opener(self, new_backend: NewBackend) -> StoreOpener:
        return new_backend()

    @pytest.fixture
    def store(self, store_opener: StoreOpener) -> Iterator[OnlineStore]:
        with closing(store_opener(CONFIG)) as store:
            yield store

    # -- profiles ------------------------------------------------------------------------------

    def test_an_unknown_customer_has_no_profile(self, store: OnlineStore) -> None:
        assert store.read_profile("nobody") is None
        assert store.customer_events("nobody") == []

    def test_applied_events_are_folded_into_the_profile(self, store: OnlineStore) -> None:
        events = [withdrawal(f"e-{i}", at=T0 + timedelta(days=i)) for i in range(3)]

        assert store.apply_events(events) == [ACCEPTED] * 3

        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == 3
        assert profile.last_seen == T0 + timedelta(days=2)
        habit = profile.habits["cash_withdrawal@atm"]
        assert [record.event_id for record in habit] == ["e-0", "e-1", "e-2"]
        assert {record.values()["amount"] for record in habit} == {200}
        assert store.read_profile("cust-2") is None

    def test_the_profile_is_the_fold_of_the_events(self, store: OnlineStore) -> None:
        events = varied_history()
        store.apply_events(events[:15])
        store.apply_events(events[15:])

        assert_profiles_close(store.read_profile("cust-1"), fold(None, events, CONFIG))

    def test_an_event_that_no_population_counter_counts_is_folded_too(
        self, store: OnlineStore
    ) -> None:
        stated = event_of(
            "p-1", "cust-1", "preference_stated", "web", T0, {"key": "receipt", "value": True}
        )

        assert store.apply_events([stated]) == [ACCEPTED]

        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.stated["receipt"].value is True
        assert store.population_prior().shares == {}

    # -- idempotence ---------------------------------------------------------------------------

    def test_a_repeated_batch_is_all_duplicate_and_changes_nothing(
        self, store: OnlineStore
    ) -> None:
        batch = [withdrawal("e-1"), contact("e-2", "sms"), withdrawal("e-3", customer_id="cust-2")]
        store.apply_events(batch)
        before = (profile_json(store, "cust-1"), profile_json(store, "cust-2"))
        logged_before = store.customer_events("cust-1")
        prior_before = store.population_prior()

        assert store.apply_events(batch) == [DUPLICATE] * 3

        assert (profile_json(store, "cust-1"), profile_json(store, "cust-2")) == before
        assert store.customer_events("cust-1") == logged_before
        assert store.population_prior() == prior_before

    def test_an_event_id_repeated_in_one_batch_is_a_duplicate(self, store: OnlineStore) -> None:
        first = withdrawal("e-1", amount=200)
        resent = withdrawal("e-1", amount=50, at=T0 + timedelta(hours=1))  # same id, other body

        statuses = store.apply_events([first, withdrawal("e-2"), resent])

        assert statuses == [ACCEPTED, ACCEPTED, DUPLICATE]
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == 2
        assert store.customer_events("cust-1") == [first, withdrawal("e-2")]

    def test_statuses_follow_the_input_order_of_a_mixed_batch(self, store: OnlineStore) -> None:
        store.apply_events([withdrawal("a-1", customer_id="a")])
        batch = [
            withdrawal("b-1", customer_id="b"),
            withdrawal("a-1", customer_id="a"),
            withdrawal("a-2", customer_id="a"),
            withdrawal("b-1", customer_id="b"),
            contact("c-1", "email", customer_id="c"),
            withdrawal("b-2", customer_id="b"),
            withdrawal("a-2", customer_id="a"),
        ]

        statuses = store.apply_events(batch)

        assert statuses == [ACCEPTED, DUPLICATE, ACCEPTED, DUPLICATE, ACCEPTED, ACCEPTED, DUPLICATE]
        counts = {}
        for customer_id in ("a", "b", "c"):
            profile = store.read_profile(customer_id)
            assert profile is not None
            counts[customer_id] = profile.event_count
        assert counts == {"a": 2, "b": 2, "c": 1}
        assert [e.event_id for e in store.customer_events("b")] == ["b-1", "b-2"]

    def test_an_empty_batch_does_nothing(self, store: OnlineStore) -> None:
        assert store.apply_events([]) == []

    def test_an_event_older_than_the_profiles_ring_is_still_folded_once(
        self, store_opener: StoreOpener
    ) -> None:
        # The profile alone cannot tell such an event from a duplicate; the store checked its
        # id against its own log, so it folds it: late events are normal.
        with closing(store_opener(EngineConfig(seen_capacity=3))) as store:
            recent = [withdrawal(f"e-{i}", at=T0 + timedelta(hours=i)) for i in range(1, 4)]
            store.apply_events(recent)
            late = contact("late", "sms", at=T0)

            assert store.apply_events([late]) == [ACCEPTED]

            profile = store.read_profile("cust-1")
            assert profile is not None
            assert profile.event_count == 4
            assert "sms" in profile.contact_channels
            assert store.customer_events("cust-1") == [*recent, late]
            assert "contact" in store.population_prior().shares
            assert store.apply_events([late]) == [DUPLICATE]  # the log remembers it
            assert store.read_profile("cust-1").event_count == 4  # type: ignore[union-attr]

    # -- atomicity -----------------------------------------------------------------------------

    def test_a_batch_that_fails_leaves_nothing_behind(self, store_opener: StoreOpener) -> None:
        # The fold raising on a malformed event is the only failure a contract test can cause
        # in every backend without mocks. It stops the customer's write after the backend has
        # begun it; each backend adds a test that fails between two writes (e.g. SQLite: a
        # trigger that aborts the insert of one event).
        with closing(store_opener(CONFIG)) as store:
            store.apply_events([withdrawal("a-0", customer_id="a")])
            before = profile_json(store, "a")
            batch = [
                withdrawal("a-1", customer_id="a", at=T0 + timedelta(hours=1)),
                contact("b-1", "sms", customer_id="b"),
                contact("a-2", "sms", customer_id="a", at=T0 + timedelta(hours=2)),
                unfoldable("a-3", customer_id="a"),
            ]

            with pytest.raises(AttributeError):
                store.apply_events(batch)

            assert profile_json(store, "a") == before
            assert [e.event_id for e in store.customer_events("a")] == ["a-0"]
            b_events = [e.event_id for e in store.customer_events("b")]
            assert b_events in ([], ["b-1"])  # b's own transaction: all of it or nothing
            # Nothing of a's failed batch was remembered as seen, and the backend is not left
            # locked: another handle (another connection) can write a's events now.
            with closing(store_opener(CONFIG)) as other:
                assert other.apply_events(batch[:3]) == [
                    ACCEPTED,
                    DUPLICATE if b_events else ACCEPTED,
                    ACCEPTED,
                ]
            profile = store.read_profile("a")
            assert profile is not None
            assert profile.event_count == 3

    # -- concurrency ---------------------------------------------------------------------------

    def test_concurrent_threads_never_lose_an_event(self, store_opener: StoreOpener) -> None:
        threads, per_thread = 8, 200
        statuses: dict[int, list[AppendStatus]] = {}
        errors: dict[int, BaseException] = {}
        start = threading.Barrier(threads)

        def run(worker: int) -> None:
            start.wait(timeout=30)
            try:
                statuses[worker] = apply_one_by_one(store, concurrent_events(worker, per_thread))
            except BaseException as exc:  # reported below, with the worker that met it
                errors[worker] = exc

        with closing(store_opener(ROOMY)) as store:
            workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join(timeout=300)

            assert errors == {}
            assert sorted(statuses) == list(range(threads))  # every thread finished
            # DUPLICATE only where a retried write had been done after all (never in SQLite).
            assert all(TOO_LATE not in s for s in statuses.values())
            self._assert_all_folded_and_logged(store, threads, per_thread)

    def test_concurrent_processes_never_lose_an_event(self, store_opener: StoreOpener) -> None:
        processes, per_process = 4, 200
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(processes)
        with closing(store_opener(ROOMY)) as store:  # creates the backend's schema first
            children = [
                context.Process(target=process_worker, args=(store_opener, w, per_process, start))
                for w in range(processes)
            ]
            for child in children:
                child.start()
            for child in children:
                child.join(timeout=300)

            assert [child.exitcode for child in children] == [0] * processes
            self._assert_all_folded_and_logged(store, processes, per_process)

    @staticmethod
    def _assert_all_folded_and_logged(store: OnlineStore, workers: int, per_worker: int) -> None:
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == workers * per_worker
        logged = [event.event_id for event in store.customer_events("cust-1")]
        expected = {f"w{w}-{i}" for w in range(workers) for i in range(per_worker)}
        assert len(logged) == len(expected)
        assert set(logged) == expected
        for worker in range(workers):  # each worker's own calls are accepted in its order
            mine = [event_id for event_id in logged if event_id.startswith(f"w{worker}-")]
            assert mine == [f"w{worker}-{i}" for i in range(per_worker)]

    # -- order independence ----------------------------------------------------------------------

    def test_the_arrival_order_does_not_change_the_profile(self, new_backend: NewBackend) -> None:
        events = varied_history()
        shuffled = events[:]
        random.Random(7).shuffle(shuffled)
        with (
            closing(new_backend()(CONFIG)) as in_order,
            closing(new_backend()(CONFIG)) as out_of_order,
        ):
            for start in range(0, len(events), 10):
                in_order.apply_events(events[start : start + 10])
            for start in range(0, len(shuffled), 7):
                out_of_order.apply_events(list(reversed(shuffled[start : start + 7])))

            assert_profiles_close(
                out_of_order.read_profile("cust-1"), in_order.read_profile("cust-1")
            )
            assert out_of_order.population_prior() == in_order.population_prior()

    # -- the logs ----------------------------------------------------------------------------

    def test_customer_events_are_the_accepted_events_in_acceptance_order(
        self, store: OnlineStore
    ) -> None:
        late_first = withdrawal("e-late", at=T0 + timedelta(days=3))
        first = [late_first, contact("e-sms", "sms"), withdrawal("x-1", customer_id="other")]
        second = [withdrawal("e-early", at=T0 - timedelta(days=3)), contact("e-sms", "sms")]

        store.apply_events(first)
        store.apply_events(second)

        assert store.customer_events("cust-1") == [late_first, contact("e-sms", "sms"), second[0]]
        assert [e.event_id for e in store.customer_events("other")] == ["x-1"]

    def test_events_round_trip_with_their_extra_attributes(self, store: OnlineStore) -> None:
        at = datetime.fromisoformat("2026-03-29T02:30:00.000123+02:00")
        event = event_of("e-1", "cust-1", "contact", "chat", at, {"topic": "fees", "agent": "a-7"})

        store.apply_events([event])

        [logged] = store.customer_events("cust-1")
        assert logged == event
        assert logged.occurred_at == at
        assert logged.attributes == {"topic": "fees", "agent": "a-7"}

    def test_decisions_round_trip(self, store: OnlineStore) -> None:
        logged = decision("dec-1")

        store.log_decision(logged)
        store.log_decision(decision("dec-2", customer_id="cust-2"))

        assert store.read_decision("dec-1") == logged
        assert store.read_decision("dec-2") == decision("dec-2", customer_id="cust-2")
        assert store.read_decision("dec-unknown") is None

    def test_a_decision_id_is_logged_once(self, store: OnlineStore) -> None:
        store.log_decision(decision("dec-1"))
        changed = decision("dec-1").model_copy(update={"policy_version": "rules-2"})

        with pytest.raises(DuplicateDecision, match="dec-1"):
            store.log_decision(changed)

        assert store.read_decision("dec-1") == decision("dec-1")

    def test_a_decision_is_recorded_with_its_delivered_actions(self, store: OnlineStore) -> None:
        delivered = Event(
            event_id="exposure:dec-1:savings_plan",
            customer_id="cust-1",
            touchpoint="web-1",
            channel=Channel.EMAIL,
            type=EventType.ACTION_EXPOSED,
            occurred_at=T0,
            attributes={
                "decision_id": "dec-1",
                "action_id": "savings_plan",
                "delivery_channel": "email",
                "purpose": "marketing",
                "segment": "premium",
            },
        )
        store.record_decision(decision("dec-1"), [delivered])

        assert store.read_decision("dec-1") == decision("dec-1")
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert [x.action_id for x in profile.exposures] == ["savings_plan"]
        # Another decision under the same id is refused, and nothing is delivered twice.
        changed = decision("dec-1").model_copy(update={"policy_version": "rules-2"})
        with pytest.raises(DuplicateDecision):
            store.record_decision(changed, [delivered])
        assert len(store.read_profile("cust-1").exposures) == 1  # type: ignore[union-attr]

    # -- population ----------------------------------------------------------------------------

    def test_the_population_prior_counts_contact_channels(self, store: OnlineStore) -> None:
        assert store.population_prior().shares == {}
        events = [
            contact("s-1", "sms", customer_id="a"),
            contact("s-2", "sms", customer_id="b"),
            contact("s-3", "sms", customer_id="c"),
            contact("m-1", "email", customer_id="a"),
            contact("m-2", "email", customer_id="a"),  # one customer's two: both count
            withdrawal("w-1", customer_id="a"),
            withdrawal("w-2", customer_id="b", channel="mobile_app"),
        ]

        store.apply_events(events)

        shares = store.population_prior().shares
        assert shares["contact"] == pytest.approx({"email": 0.4, "sms": 0.6})
        assert shares["request:cash_withdrawal"] == pytest.approx({"atm": 0.5, "mobile_app": 0.5})

    # -- durability ----------------------------------------------------------------------------

    def test_a_reopened_store_has_everything(self, store_opener: StoreOpener) -> None:
        events = varied_history()
        with closing(store_opener(CONFIG)) as store:
            store.apply_events(events)
            store.log_decision(decision("dec-1"))
            profile, prior = profile_json(store, "cust-1"), store.population_prior()

        with closing(store_opener(CONFIG)) as reopened:
            assert profile_json(reopened, "cust-1") == profile
            assert reopened.customer_events("cust-1") == events
            assert reopened.read_decision("dec-1") == decision("dec-1")
            assert reopened.population_prior() == prior
            assert reopened.apply_events(events[:1]) == [DUPLICATE]

    def test_ping_answers(self, store_opener: StoreOpener) -> None:
        store = store_opener(CONFIG)
        try:
            assert store.ping() is None
            store.apply_events([withdrawal("e-ping")])
            store.ping()  # a store in use answers too
        finally:
            store.close()

        with pytest.raises(StoreUnavailable):
            store.ping()  # a closed handle does not: ping is what readiness relies on
