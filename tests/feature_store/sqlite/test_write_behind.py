"""The decision log written behind the response, and the writer's group commit, on real files.

The kill -9 test runs the recording process as a child and kills it with SIGKILL: everything it
recorded more than the loss window before the kill must be in the file. Other tests hold the
file's write lock from a plain sqlite3 connection (as another process would) to keep entries
pending, or to make writes queue behind one another, without any timing assumption.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from api.serving import record_outcome
from engine.events import OutcomeKind
from engine.identity import Identity, IdentityType
from feature_store.base import AppendStatus
from feature_store.errors import DuplicateDecision
from feature_store.sqlite.store import SQLiteStore, SQLiteStoreConfig
from tests.feature_store.contract_builders import CONFIG, T0, decision, exposure, withdrawal

WINDOW = 1.0  # seconds: the largest loss window the setting allows


def open_store(path: Path, *, window: float = WINDOW, busy_timeout: float = 5.0) -> SQLiteStore:
    config = SQLiteStoreConfig(
        path=path, busy_timeout_seconds=busy_timeout, decision_log_loss_window_seconds=window
    )
    return SQLiteStore(CONFIG, config, prior_ttl_seconds=0.0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "rapport.db"


@pytest.fixture
def raw(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the file, in autocommit mode, as another process has."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as connection:
        yield connection


def logged_ids(connection: sqlite3.Connection) -> set[str]:
    return {str(row[0]) for row in connection.execute("SELECT decision_id FROM decisions")}


def wait_for(condition: Callable[[], bool], *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- kill -9 -----------------------------------------------------------------------------------


def record_until_killed(path: Path, window: float, report: Connection) -> None:
    """Run in a child: record decisions (no exposures, so only the log's own flushes commit
    them) and report each one's id and the monotonic time it returned at."""
    store = open_store(path, window=window)
    for n in range(1_000_000):
        decision_id = f"dec-{n}"
        store.record_decision(decision(decision_id), [])
        report.send((decision_id, time.monotonic()))  # CLOCK_MONOTONIC: one clock per host
        time.sleep(0.002)


def test_a_kill_9_loses_no_decision_recorded_more_than_the_window_before_it(
    db_path: Path,
) -> None:
    open_store(db_path).close()  # the schema, before the child races to create it
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=record_until_killed, args=(db_path, WINDOW, sender))
    child.start()
    returned: dict[str, float] = {}
    try:
        # Record for three windows, so that many decisions are older than the window.
        while not returned or max(returned.values()) - min(returned.values()) < 3 * WINDOW:
            assert receiver.poll(60), "the child stopped reporting"
            decision_id, at = receiver.recv()
            returned[decision_id] = at
        killed_at = time.monotonic()
        os.kill(child.pid or 0, signal.SIGKILL)
    finally:
        child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    while receiver.poll(0):  # reported before the kill: returned before it, too
        decision_id, at = receiver.recv()
        returned[decision_id] = at

    with closing(sqlite3.connect(db_path)) as connection:  # recovers the WAL as a new process
        in_file = logged_ids(connection)

    old_enough = {d for d, at in returned.items() if at < killed_at - WINDOW}
    assert len(old_enough) > 100  # the test says something
    assert old_enough - in_file == set()
    assert in_file <= set(returned)  # nothing logged that was not recorded


# -- pending entries ---------------------------------------------------------------------------


def test_a_pending_decision_is_read_back_and_its_outcome_accepted(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    with closing(open_store(db_path, busy_timeout=60.0)) as store:
        given = decision("dec-1")
        raw.execute("BEGIN IMMEDIATE")  # the writer cannot write: the entry stays pending
        try:
            store.record_decision(given, [])
            assert store.read_decision("dec-1") == given
            assert "dec-1" not in logged_ids(raw)
            with pytest.raises(DuplicateDecision):
                store.record_decision(given, [])
            with pytest.raises(DuplicateDecision):
                store.log_decision(given)
        finally:
            raw.execute("ROLLBACK")

        # The outcome waits for the writer like any event, and joins the decision.
        status = record_outcome(
            store, "dec-1", "default:cash_withdrawal", OutcomeKind.ACCEPTED, at=T0
        )

        assert status is AppendStatus.ACCEPTED
        wait_for(lambda: "dec-1" in logged_ids(raw))
        assert store.read_decision("dec-1") == given


def test_the_exposures_are_committed_when_record_decision_returns(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    with closing(open_store(db_path)) as store:
        store.record_decision(decision("dec-1"), [exposure("dec-1", "cust-1")])

        # Another connection (another process) sees them at once: they count toward caps.
        [(event_id,)] = raw.execute("SELECT event_id FROM events WHERE customer_id = 'cust-1'")
        assert event_id == "exposure:dec-1:savings_plan"
        with closing(open_store(db_path)) as other:
            profile = other.read_profile("cust-1")
            assert profile is not None
            assert [x.action_id for x in profile.exposures] == ["savings_plan"]


def test_closing_the_store_writes_the_pending_decisions(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    store = open_store(db_path)
    for n in range(20):
        store.record_decision(decision(f"dec-{n}"), [])

    store.close()

    assert logged_ids(raw) == {f"dec-{n}" for n in range(20)}


def test_pending_decisions_are_exported_and_erased_with_the_customer(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    with closing(open_store(db_path)) as store:
        store.apply_events([withdrawal("e-1")])
        store.record_decision(decision("dec-1"), [])

        export = store.export_customer("cust-1")
        assert export is not None
        assert [d.decision_id for d in export.decisions] == ["dec-1"]

        store.record_decision(decision("dec-2"), [])
        assert store.erase_customer("cust-1")
        store.record_decision(decision("dec-3"), [])  # recorded after the erasure: dropped
        store.read_log("decisions", 0, 10)  # writes what is pending

        assert logged_ids(raw) == set()
        assert store.export_customer("cust-1") is None


def test_a_pending_decision_of_a_merged_customer_is_filed_under_the_survivor(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    card = Identity(type=IdentityType.CARD, value="tok_of_cust").hashed(b"secret")
    with closing(open_store(db_path)) as store:
        store.link_identities([card], "cust-2", at=T0)
        store.record_decision(decision("dec-1", customer_id="cust-2"), [])
        store.link_identities([card], "cust-1", at=T0 + timedelta(seconds=1))  # merges cust-2

        store.read_log("decisions", 0, 10)

        assert raw.execute("SELECT customer_id FROM decisions").fetchall() == [("cust-1",)]


# -- group commit ------------------------------------------------------------------------------


def test_writes_queued_behind_a_busy_writer_commit_together(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    writers = 6
    with closing(open_store(db_path, busy_timeout=60.0)) as store:
        store.apply_events([withdrawal("e-0")])
        before = store.group_stats.groups
        raw.execute("BEGIN IMMEDIATE")  # another process holds the lock: the leader waits
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                store.apply_events([withdrawal(f"e-{n + 1}", at=T0 + timedelta(minutes=n + 1))])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        try:
            for thread in threads:
                thread.start()
            wait_for(lambda: len(store._writer._queue) == writers)  # type: ignore[union-attr]
        finally:
            raw.execute("ROLLBACK")
        for thread in threads:
            thread.join(timeout=60)

        assert errors == []
        # The first waited for the lock alone; the others queued behind it and shared a commit.
        assert store.group_stats.groups - before == 2
        assert store.group_stats.largest == writers - 1
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == writers + 1


def test_a_failing_write_in_a_group_fails_alone(db_path: Path, raw: sqlite3.Connection) -> None:
    with closing(open_store(db_path, busy_timeout=60.0)) as store:
        store.apply_events([withdrawal("e-0")])
        raw.execute(
            "CREATE TRIGGER fail_bad BEFORE INSERT ON events WHEN NEW.event_id = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        outcomes: dict[str, object] = {}

        def write(event_id: str, minutes: int) -> None:
            event = withdrawal(event_id, at=T0 + timedelta(minutes=minutes))
            try:
                outcomes[event_id] = store.apply_events([event])
            except BaseException as exc:
                outcomes[event_id] = exc

        raw.execute("BEGIN IMMEDIATE")
        threads = [
            threading.Thread(target=write, args=(event_id, n + 1))
            for n, event_id in enumerate(["first", "good-1", "bad", "good-2"])
        ]
        queue = store._writer._queue  # type: ignore[union-attr]
        try:
            for queued, thread in enumerate(threads, start=1):
                thread.start()  # queued in this order, so "first" leads alone
                wait_for(lambda queued=queued: len(queue) == queued)  # type: ignore[misc]
        finally:
            raw.execute("ROLLBACK")
        for thread in threads:
            thread.join(timeout=60)

        assert (
            outcomes["first"] == outcomes["good-1"] == outcomes["good-2"] == [AppendStatus.ACCEPTED]
        )
        assert "injected failure" in str(outcomes["bad"])
        logged = [e.event_id for e in store.customer_events("cust-1")]
        assert logged == ["e-0", "first", "good-1", "good-2"]


def record_with_exposures(path: Path, worker: int, count: int, start: object) -> None:
    """Run in a child: record `count` decisions of one customer, each with its exposure."""
    with closing(open_store(path, busy_timeout=60.0)) as store:
        start.wait(timeout=60)  # type: ignore[attr-defined]
        for n in range(count):
            decision_id = f"dec-{worker}-{n}"
            store.record_decision(decision(decision_id), [exposure(decision_id, "cust-1")])


def test_processes_recording_decisions_of_one_customer_lose_nothing(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    processes, per_process = 3, 40
    open_store(db_path).close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    children = [
        context.Process(target=record_with_exposures, args=(db_path, w, per_process, start))
        for w in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=300)

    assert [child.exitcode for child in children] == [0] * processes
    expected = {f"dec-{w}-{n}" for w in range(processes) for n in range(per_process)}
    assert logged_ids(raw) == expected
    exposures = {row[0] for row in raw.execute("SELECT event_id FROM events")}
    assert exposures == {f"exposure:{d}:savings_plan" for d in expected}
