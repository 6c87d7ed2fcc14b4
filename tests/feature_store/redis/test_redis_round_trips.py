"""Round trips of the Redis store's hot paths, counted on the wire: every write of a request
to a socket (a command, or a whole pipeline) is one send; a pipeline to one server is one round
trip, and on a cluster one per node it touches, sent in parallel.

The counter wraps redis-py's connection send (the real server answers everything); a new
connection's handshake is not counted."""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
import redis.connection

from feature_store.redis.store import RedisStore
from tests.feature_store.contract import T0, withdrawal
from tests.feature_store.contract_builders import decision, exposure
from tests.feature_store.redis.support import Target

pytestmark = pytest.mark.redis


#: What a new connection sends before its first command (once per connection, not per call).
_HANDSHAKE = (b"\r\nCLIENT\r\n", b"\r\nHELLO\r\n", b"\r\nAUTH\r\n", b"\r\nSELECT\r\n")


class Sends:
    """How many times a request was written to a Redis socket."""

    def __init__(self) -> None:
        self.count = 0

    def taken(self) -> int:
        count, self.count = self.count, 0
        return count


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Sends:
    counter = Sends()
    real = redis.connection.AbstractConnection.send_packed_command

    def counting(connection: Any, command: Any, check_health: bool = True) -> None:
        first = bytes(command[0] if isinstance(command, list) else command)
        if not any(name in first[:40].upper() for name in _HANDSHAKE):
            counter.count += 1
        real(connection, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return counter


def _warm(store: RedisStore) -> None:
    """Connections open and scripts loaded: what a serving worker has after its first call."""
    store.read_profile("warm-up")
    store.record_decision(decision("dec-warm", "warm-up"), [exposure("dec-warm", "warm-up")])
    store.apply_events([withdrawal("w-1", customer_id="warm-up")])


def test_a_decision_is_one_read_and_one_write_round_trip(target: Target, sends: Sends) -> None:
    # On one server, exactly one send each; on a cluster the write touches the customer's
    # slot, the decision's own key and the population counters: one send to each of their
    # nodes (three here), in parallel.
    most = 1 if target.type == "redis" else 3
    with closing(target.store()) as store:
        _warm(store)
        store.apply_events([withdrawal("e-0")])
        for number, customer in enumerate(["cust-1", "cust-new"]):  # known, then a first one
            sends.taken()
            store.read_profile(customer)
            assert sends.taken() == 1
            store.record_decision(
                decision(f"dec-{number}", customer), [exposure(f"dec-{number}", customer)]
            )
            assert sends.taken() <= most

            # The exposure counts from the next read on, and the decision is logged.
            profile = store.read_profile(customer)
            assert profile is not None
            assert [x.action_id for x in profile.exposures] == ["savings_plan"]
            assert store.read_decision(f"dec-{number}") == decision(f"dec-{number}", customer)


def test_a_decision_whose_profile_changed_since_it_was_read_counts_its_exposures(
    target: Target,
) -> None:
    # The check-and-set fails (another writer committed between the read and the write): the
    # exposures go through the full update, and nothing is lost.
    with closing(target.store()) as store, closing(target.store()) as other:
        store.apply_events([withdrawal("e-0")])
        store.read_profile("cust-1")
        other.apply_events([withdrawal("e-1", at=T0 + timedelta(hours=1))])
        store.record_decision(decision("dec-1"), [exposure("dec-1", "cust-1")])

        profile = store.read_profile("cust-1")
        assert profile is not None
        assert [x.action_id for x in profile.exposures] == ["savings_plan"]
        assert [e.event_id for e in store.customer_events("cust-1")] == [
            "e-0",
            "e-1",
            "exposure:dec-1:savings_plan",
        ]


def test_a_batch_is_three_round_trips_whatever_its_customers(target: Target, sends: Sends) -> None:
    # Read, commit and the population counters; a fourth checks the erasure records of
    # customers that have no profile yet. Per node on a cluster (three here).
    nodes = 1 if target.type == "redis" else 3
    batch = [
        withdrawal(f"e-{i}", customer_id=f"cust-{i % 50}", at=T0 + timedelta(minutes=i))
        for i in range(200)
    ]
    with closing(target.store()) as store:
        _warm(store)
        sends.taken()
        store.apply_events(batch[:100])
        assert sends.taken() <= 4 * nodes
        store.apply_events(batch[100:])
        assert sends.taken() <= 3 * nodes
        assert len(store.customer_events("cust-7")) == 4
