"""The offline store: the logs of a real SQLite store exported to real Parquet, read back with
plain pandas. Incremental, idempotent, safe to interrupt, and erasure-respecting.
"""

from __future__ import annotations

import fcntl
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from api.cli import app
from engine.events import Event, OutcomeKind
from feature_store.base import LogPage, OnlineStore
from feature_store.errors import UnsupportedCapability
from feature_store.factory import open_store
from feature_store.offline import (
    SCHEMAS,
    STATE_FILE,
    TABLES,
    ExportInProgress,
    ExportReport,
    OfflineStore,
)
from feature_store.serving import record_outcome
from feature_store.sqlite import SCHEMA_VERSION
from tests.feature_store.contract import CONFIG, T0, contact, decision, withdrawal


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'rapport.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[OnlineStore]:
    with closing(open_store(store_url, CONFIG)) as store:
        yield store


@pytest.fixture
def offline(tmp_path: Path) -> OfflineStore:
    return OfflineStore(tmp_path / "offline")


def days_of_history(customer_id: str, days: int, *, start: datetime = T0) -> list[Event]:
    """A withdrawal and a contact a day, for `days` days from `start`."""
    events = []
    for day in range(days):
        at = start + timedelta(days=day)
        events.append(withdrawal(f"{customer_id}-w{day}", customer_id=customer_id, at=at))
        events.append(contact(f"{customer_id}-c{day}", "sms", customer_id=customer_id, at=at))
    return events


def with_decision_and_outcome(store: OnlineStore, customer_id: str, at: datetime) -> str:
    """A logged decision of the customer at `at`, and their answer an hour later."""
    logged = decision(f"dec-{customer_id}-{at:%d}", customer_id=customer_id)
    logged = logged.model_copy(update={"decided_at": at})
    store.log_decision(logged)
    record_outcome(
        store,
        logged.decision_id,
        "default:cash_withdrawal",
        OutcomeKind.ACCEPTED,
        at=at + timedelta(hours=1),
    )
    return logged.decision_id


def part_files(offline: OfflineStore) -> dict[str, bytes]:
    """Every part file under the offline root, by relative path, with its content."""
    return {
        str(path.relative_to(offline.root)): path.read_bytes()
        for path in sorted(offline.root.glob("*/date=*/part-*.parquet"))
    }


def all_rows(offline: OfflineStore) -> dict[str, pd.DataFrame]:
    """Each table as plain pandas reads its folder (the `date` partition column included)."""
    return {
        table: pd.read_parquet(offline.root / table).sort_values("seq").reset_index(drop=True)
        for table in TABLES
        if (offline.root / table).exists()
    }


def written(report: ExportReport) -> dict[str, int]:
    return {table: counts.rows_written for table, counts in report.tables.items()}


# -- layout and schema -------------------------------------------------------------------------


def test_the_logs_are_written_as_date_partitions_that_plain_pandas_reads(
    store: OnlineStore, offline: OfflineStore
) -> None:
    store.apply_events(days_of_history("cust-1", 3) + days_of_history("cust-2", 2))
    decision_id = with_decision_and_outcome(store, "cust-1", T0 + timedelta(days=1, hours=2))

    report = offline.export(store)

    assert written(report) == {"events": 11, "decisions": 1, "outcomes": 1}
    days = ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert sorted(p.name for p in (offline.root / "events").iterdir()) == [
        f"date={day}" for day in days
    ]
    events = pd.read_parquet(offline.root / "events")
    assert len(events) == 11
    assert events["event_id"].is_unique
    assert str(events["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert (events["occurred_at"].dt.strftime("%Y-%m-%d") == events["date"].astype(str)).all()
    assert set(events["status"]) == {"accepted"}
    assert set(events["type"]) == {"request", "contact", "outcome"}
    assert sorted(events["seq"]) == list(range(1, 12))

    outcomes = pd.read_parquet(offline.root / "outcomes")
    assert outcomes[["decision_id", "target", "outcome", "kind"]].values.tolist() == [
        [decision_id, "default:cash_withdrawal", "accepted", "default"]
    ]
    decisions = pd.read_parquet(offline.root / "decisions")
    assert decisions["decision_id"].tolist() == [decision_id]
    assert decisions["decided_at"].tolist() == [pd.Timestamp(T0 + timedelta(days=1, hours=2))]
    assert decisions["date"].astype(str).tolist() == ["2026-01-06"]
    assert '"default:cash_withdrawal"' in decisions["defaults"][0]


def test_every_file_has_the_table_schema(store: OnlineStore, offline: OfflineStore) -> None:
    store.apply_events(days_of_history("cust-1", 2))
    with_decision_and_outcome(store, "cust-1", T0 + timedelta(hours=3))
    offline.export(store)

    for table in TABLES:
        for path in (offline.root / table).glob("date=*/part-*.parquet"):
            assert pd.read_parquet(path).columns.tolist() == SCHEMAS[table].names
        assert offline.read(table).columns.tolist() == SCHEMAS[table].names


def test_an_empty_store_exports_empty_tables(store: OnlineStore, offline: OfflineStore) -> None:
    report = offline.export(store)

    assert written(report) == {"events": 0, "decisions": 0, "outcomes": 0}
    assert offline.read("events").empty
    assert offline.read("events").columns.tolist() == SCHEMAS["events"].names


# -- incremental and idempotent ----------------------------------------------------------------


def test_a_second_run_writes_nothing(store: OnlineStore, offline: OfflineStore) -> None:
    store.apply_events(days_of_history("cust-1", 4))
    with_decision_and_outcome(store, "cust-1", T0 + timedelta(days=2))
    offline.export(store, page_size=3)
    files = part_files(offline)

    report = offline.export(store, page_size=3)

    assert written(report) == {"events": 0, "decisions": 0, "outcomes": 0}
    assert part_files(offline) == files


def test_a_run_after_new_events_adds_only_them(store: OnlineStore, offline: OfflineStore) -> None:
    store.apply_events(days_of_history("cust-1", 3))
    offline.export(store)
    before = offline.read("events")

    store.apply_events(days_of_history("cust-2", 3, start=T0 + timedelta(days=1)))
    # A late event of cust-1, dated in a partition that already has a file.
    store.apply_events([withdrawal("late", customer_id="cust-1", at=T0 + timedelta(minutes=5))])
    report = offline.export(store)

    after = offline.read("events")
    assert report.tables["events"].rows_written == 7
    assert len(after) == len(before) + 7
    assert after["event_id"].is_unique
    assert set(before["event_id"]) < set(after["event_id"])
    first_day = pd.read_parquet(offline.root / "events" / "date=2026-01-05")
    assert "late" in set(first_day["event_id"])


def test_a_lost_state_file_duplicates_nothing(store: OnlineStore, offline: OfflineStore) -> None:
    store.apply_events(days_of_history("cust-1", 3))
    offline.export(store, page_size=4)
    store.apply_events(days_of_history("cust-2", 3))
    with_decision_and_outcome(store, "cust-2", T0 + timedelta(days=1))
    offline.export(store, page_size=5)
    rows = all_rows(offline)

    (offline.root / STATE_FILE).unlink()
    report = offline.export(store, page_size=7)  # other pages than the runs that wrote them

    assert written(report) == {"events": 0, "decisions": 0, "outcomes": 0}
    for table, frame in all_rows(offline).items():
        pd.testing.assert_frame_equal(frame, rows[table])


def test_a_crash_before_the_cursor_was_saved_duplicates_nothing(
    store: OnlineStore, offline: OfflineStore, tmp_path: Path
) -> None:
    store.apply_events(days_of_history("cust-1", 2))
    offline.export(store)
    saved_state = tmp_path / "state-before.json"
    shutil.copy(offline.root / STATE_FILE, saved_state)
    store.apply_events(days_of_history("cust-2", 3))
    with_decision_and_outcome(store, "cust-2", T0 + timedelta(days=2))
    offline.export(store)
    rows = all_rows(offline)
    # The second run crashed after writing its parts but before saving its cursors, and
    # before one of its parts reached the disk.
    shutil.copy(saved_state, offline.root / STATE_FILE)
    lost = next((offline.root / "events" / "date=2026-01-07").glob("part-*.parquet"))
    lost.unlink()

    report = offline.export(store, page_size=2)

    # The lost part's rows (cust-2's two events of that day and the outcome), and only them.
    assert written(report) == {"events": 3, "decisions": 0, "outcomes": 0}
    for table, frame in all_rows(offline).items():
        pd.testing.assert_frame_equal(frame, rows[table])


def test_two_exports_cannot_write_one_root_at_once(
    store: OnlineStore, offline: OfflineStore
) -> None:
    offline.root.mkdir()
    with open(offline.root / ".lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ExportInProgress):
            offline.export(store)
    offline.export(store)  # released with its holder


# -- erasure -----------------------------------------------------------------------------------


def test_an_erased_customer_is_removed_from_every_partition(
    store: OnlineStore, offline: OfflineStore
) -> None:
    store.apply_events(days_of_history("cust-1", 3) + days_of_history("cust-2", 3))
    for customer_id in ("cust-1", "cust-2"):
        with_decision_and_outcome(store, customer_id, T0 + timedelta(days=1, hours=2))
    offline.export(store)

    store.erase_customer("cust-1")
    report = offline.export(store)

    assert report.erasures_applied == 1
    assert report.tables["events"].rows_erased == 7
    assert report.tables["decisions"].rows_erased == 1
    assert report.tables["outcomes"].rows_erased == 1
    for table, frame in all_rows(offline).items():
        assert set(frame["customer_id"]) == {"cust-2"}, table
    assert len(offline.read("events")) == 7
    again = offline.export(store)
    assert again.erasures_applied == 0
    assert written(again) == {"events": 0, "decisions": 0, "outcomes": 0}


def test_a_file_left_with_only_erased_rows_is_deleted(
    store: OnlineStore, offline: OfflineStore
) -> None:
    store.apply_events(days_of_history("cust-1", 2))
    store.apply_events(days_of_history("cust-2", 1, start=T0 + timedelta(days=1)))
    offline.export(store)

    store.erase_customer("cust-1")
    offline.export(store)

    assert [p.name for p in (offline.root / "events").iterdir()] == ["date=2026-01-06"]


def test_customers_erased_before_the_export_are_never_written(
    store: OnlineStore, offline: OfflineStore
) -> None:
    store.apply_events(days_of_history("cust-1", 2) + days_of_history("cust-2", 2))
    store.erase_customer("cust-2")

    report = offline.export(store)

    assert set(offline.read("events")["customer_id"]) == {"cust-1"}
    assert report.erasures_applied == 1  # recorded as applied: nothing to rewrite later


# -- the logs' cursor (OnlineStore.read_log) ---------------------------------------------------


def test_read_log_pages_through_each_log_in_seq_order(store: OnlineStore) -> None:
    store.apply_events(days_of_history("cust-1", 3))
    for n in range(3):
        store.log_decision(decision(f"dec-{n}").model_copy(update={"decided_at": T0}))

    pages: list[LogPage] = []
    after = 0
    while not pages or pages[-1].records:
        pages.append(store.read_log("events", after, 4))
        after = pages[-1].next_after

    seqs = [record.seq for page in pages for record in page.records]
    assert [len(page.records) for page in pages] == [4, 2, 0]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 6
    assert pages[-1].next_after == seqs[-1] == pages[0].high_water
    first = pages[0].records[0]
    assert first.event() == days_of_history("cust-1", 3)[0]
    assert first.status == "accepted"
    decisions = store.read_log("decisions", 0, 10)
    assert [r.decision().decision_id for r in decisions.records] == ["dec-0", "dec-1", "dec-2"]
    assert {r.status for r in decisions.records} == {None}
    with pytest.raises(ValueError, match="limit"):
        store.read_log("events", 0, 0)


def test_erased_entries_leave_the_logs_and_their_digests_are_listed(store: OnlineStore) -> None:
    store.apply_events(days_of_history("cust-1", 1) + days_of_history("cust-2", 1))
    store.log_decision(decision("dec-1", customer_id="cust-1"))
    store.erase_customer("cust-1")

    assert {r.customer_id for r in store.read_log("events", 0, 100).records} == {"cust-2"}
    assert store.read_log("decisions", 0, 100).records == []
    assert len(store.erased_digests()) == 1
    store.log_decision(decision("dec-2", customer_id="cust-2"))
    [entry] = store.read_log("decisions", 0, 100).records
    assert entry.seq == 2  # never reused


def test_the_schema_3_migration_numbers_existing_decisions_once(
    store_url: str, tmp_path: Path
) -> None:
    with closing(open_store(store_url, CONFIG)) as store:
        for n, hours in enumerate([3, 1, 2]):
            logged = decision(f"dec-{n}").model_copy(update={"decided_at": T0.replace(hour=hours)})
            store.log_decision(logged)
    # As a file of schema version 2 had them: no decision_order.
    with closing(sqlite3.connect(tmp_path / "rapport.db", isolation_level=None)) as raw:
        raw.execute("DROP TABLE decision_order")
        raw.execute("PRAGMA user_version = 2")

    for _ in range(2):  # reopening a migrated file changes nothing
        with closing(open_store(store_url, CONFIG)) as store:
            page = store.read_log("decisions", 0, 10)
            assert [r.decision().decision_id for r in page.records] == ["dec-1", "dec-2", "dec-0"]
            assert [r.seq for r in page.records] == [1, 2, 3]
    with closing(sqlite3.connect(tmp_path / "rapport.db")) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_store_that_cannot_read_its_logs_says_so(offline: OfflineStore) -> None:
    # The Redis store does not read its logs yet; nothing is sent to Redis before its first call.
    with closing(open_store("redis://127.0.0.1:1/0", CONFIG)) as redis_store:
        with pytest.raises(UnsupportedCapability, match="read_log"):
            redis_store.read_log("events", 0, 10)
        with pytest.raises(UnsupportedCapability, match="erased_digests"):
            offline.export(redis_store)


# -- the command -------------------------------------------------------------------------------


def test_rapport_export_shows_a_summary_and_is_idempotent(
    store: OnlineStore, store_url: str, tmp_path: Path
) -> None:
    store.apply_events(days_of_history("cust-1", 3))
    with_decision_and_outcome(store, "cust-1", T0 + timedelta(days=1))
    runner = CliRunner(env={"RAPPORT_STORE": store_url, "COLUMNS": "200"})
    out = tmp_path / "exported"

    first = runner.invoke(app, ["export", "--out", str(out)])
    second = runner.invoke(app, ["export", "--out", str(out), "--page-size", "2"])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "events" in first.output
    assert "rows written" in first.output
    assert "new erasure records applied" in first.output
    assert len(pd.read_parquet(out / "events")) == 7
    assert len(pd.read_parquet(out / "decisions")) == 1


def test_rapport_export_on_a_store_that_cannot_read_its_logs_fails_clearly(
    tmp_path: Path,
) -> None:
    runner = CliRunner(env={"RAPPORT_STORE": "redis://127.0.0.1:1/0", "COLUMNS": "200"})

    result = runner.invoke(app, ["export", "--out", str(tmp_path / "exported")])

    assert result.exit_code == 1
    assert "export needs a store that can read its logs" in result.output
