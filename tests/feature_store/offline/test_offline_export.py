"""The offline store: the logs of a real store exported to real Parquet, read back with plain
pandas. Incremental, idempotent, safe to interrupt, and erasure-respecting.

The tests that build a store run on each backend that can read its logs: SQLite, one Redis
server and a local 3-master Redis Cluster (the servers are started once per session); and both
backends export the same rows for the same operations.
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
from api.serving import record_outcome
from engine.config import EngineConfig
from engine.events import Event, OutcomeKind
from engine.identity import Identity, IdentityType
from feature_store.base import OnlineStore
from feature_store.errors import UnsupportedCapability
from feature_store.factory import open_store
from feature_store.offline.export import (
    SCHEMAS,
    STATE_FILE,
    TABLES,
    ExportInProgress,
    ExportReport,
    OfflineStore,
)
from feature_store.sqlite.store import SCHEMA_VERSION, SQLiteStore, SQLiteStoreConfig
from tests.feature_store.contract import CONFIG, T0, contact, decision, withdrawal
from tests.feature_store.contract_builders import exposure
from tests.feature_store.redis_servers import LocalCluster, RedisServer

BACKENDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis+cluster", marks=pytest.mark.redis),
]


def empty_store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of `backend` (a new file, or an emptied Redis)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'rapport.db'}"
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flushall()
        return server.url
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    cluster.flushall()
    return cluster.url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return empty_store_url(request.param, request, tmp_path)


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


# -- every backend exports the same rows --------------------------------------------------------


def card(customer_id: str) -> Identity:
    return Identity(type=IdentityType.CARD, value=f"tok_of_{customer_id}")


def before_the_first_export(store: OnlineStore) -> None:
    """Histories, resent events, decisions with and without outcomes or delivered actions, an
    anonymous decision, and identifiers for a merge to come."""
    store.apply_events(days_of_history("cust-a", 3) + days_of_history("cust-b", 2))
    store.apply_events(days_of_history("cust-c", 2, start=T0 + timedelta(days=1)))
    store.apply_events(days_of_history("cust-a", 2))  # resent: nothing new is logged
    with_decision_and_outcome(store, "cust-a", T0 + timedelta(days=1, hours=2))
    with_decision_and_outcome(store, "cust-c", T0 + timedelta(days=2))
    given = decision("dec-b", customer_id="cust-b").model_copy(update={"decided_at": T0})
    store.record_decision(given, [exposure("dec-b", "cust-b")])
    store.log_decision(decision("dec-anon", customer_id="anonymous"))
    secret = b"offline-test-secret"
    store.link_identities([card("a").hashed(secret)], "cust-a", at=T0)
    store.link_identities([card("c").hashed(secret)], "cust-c", at=T0)


def between_the_exports(store: OnlineStore) -> None:
    """A merge (cust-c into cust-a) with events for the merged id after it, an erasure of a
    customer already exported, a new customer."""
    secret = b"offline-test-secret"
    both = [card("a").hashed(secret), card("c").hashed(secret)]
    assert store.link_identities(both, None, at=T0).merged == ["cust-c"]
    store.apply_events([withdrawal("c-late", customer_id="cust-c", at=T0 + timedelta(days=4))])
    with_decision_and_outcome(store, "cust-b", T0 + timedelta(days=2))
    store.erase_customer("cust-b")
    store.apply_events(days_of_history("cust-d", 1, start=T0 + timedelta(days=3)))
    # Decided for the merged id: every store files the decision under the survivor.
    with_decision_and_outcome(store, "cust-c", T0 + timedelta(days=3))


def rows_but_seqs(offline: OfflineStore) -> dict[str, pd.DataFrame]:
    """Each table's rows without their seq, in a stable order."""
    tables = {}
    for table in TABLES:
        frame = offline.read(table).drop(columns="seq")
        key = "decision_id" if table == "decisions" else "event_id"
        tables[table] = frame.sort_values(key).reset_index(drop=True)
    return tables


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis", "redis+cluster"])
def test_sqlite_and_redis_export_the_same_rows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    urls = {
        "sqlite": empty_store_url("sqlite", request, tmp_path),
        backend: empty_store_url(backend, request, tmp_path),
    }
    exported = {}
    for name, url in urls.items():
        offline = OfflineStore(tmp_path / f"offline-{name}")
        with closing(open_store(url, CONFIG)) as store:
            before_the_first_export(store)
            offline.export(store, page_size=4)
            between_the_exports(store)
            report = offline.export(store, page_size=3)
        assert report.erasures_applied == 1
        exported[name] = rows_but_seqs(offline)

    assert len(exported["sqlite"]["events"]) == 16
    assert len(exported["sqlite"]["outcomes"]) == 3
    # Exported before the merge, cust-c's decision keeps its id (see
    # feature_store/offline/export.py).
    customers = exported["sqlite"]["decisions"]["customer_id"]
    assert sorted(customers) == ["anonymous", "cust-a", "cust-a", "cust-c"]
    for table in TABLES:
        pd.testing.assert_frame_equal(exported[backend][table], exported["sqlite"][table])


# -- the logs' cursor (OnlineStore.read_log; its contract: tests/feature_store/contract_logs.py)


def test_the_schema_3_migration_numbers_existing_decisions_once(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'rapport.db'}"
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


class LoglessStore(SQLiteStore):
    """A real store without the optional capability, as a backend that lacks it would be."""

    read_log = OnlineStore.read_log
    erased_digests = OnlineStore.erased_digests


def logless_store(path: Path, config: EngineConfig = CONFIG) -> LoglessStore:
    return LoglessStore(config, SQLiteStoreConfig(path=path))


def test_a_store_that_cannot_read_its_logs_says_so(offline: OfflineStore, tmp_path: Path) -> None:
    with closing(logless_store(tmp_path / "logless.db")) as store:
        with pytest.raises(UnsupportedCapability, match="read_log"):
            store.read_log("events", 0, 10)
        with pytest.raises(UnsupportedCapability, match="erased_digests"):
            offline.export(store)


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every store that a URL opens reads its logs; the command opens this one instead.
    monkeypatch.setattr(
        "api.cli.export.open_store",
        lambda url, config: logless_store(tmp_path / "logless.db", config),
    )
    runner = CliRunner(env={"RAPPORT_STORE": "sqlite:///unused.db", "COLUMNS": "200"})

    result = runner.invoke(app, ["export", "--out", str(tmp_path / "exported")])

    assert result.exit_code == 1
    assert "export needs a store that can read its logs" in result.output
