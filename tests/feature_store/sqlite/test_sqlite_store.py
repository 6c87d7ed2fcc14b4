"""The SQLite store: the shared contract on real files, then what only SQLite has.

The SQLite-specific tests look inside the file with a second, plain sqlite3 connection, the way
another process would, and use SQLite's own means (locks, triggers) to make writes fail.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from pydantic import ValidationError

from feature_store.errors import StoreError, StoreUnavailable, UnsupportedStoreUrl
from feature_store.factory import open_store
from feature_store.sqlite.store import (
    SCHEMA_VERSION,
    IncompatibleDatabase,
    SQLiteStore,
    SQLiteStoreConfig,
)
from tests.feature_store.contract import (
    ACCEPTED,
    CONFIG,
    ROOMY,
    T0,
    NewBackend,
    OnlineStoreContract,
    StoreOpener,
    concurrent_events,
    contact,
    decision,
    profile_json,
    withdrawal,
)
from tests.feature_store.contract_privacy import IdentityPrivacyContract


class TestSQLiteStoreContract(OnlineStoreContract, IdentityPrivacyContract):
    @pytest.fixture
    def new_backend(self, tmp_path: Path) -> NewBackend:
        files = itertools.count()

        def new() -> StoreOpener:
            config = SQLiteStoreConfig(path=tmp_path / f"store-{next(files)}.db")
            # A partial of the class pickles by reference, so child processes can open it too.
            return partial(SQLiteStore, sqlite_config=config, prior_ttl_seconds=0.0)

        return new


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "rapport.db"


def sqlite_store(path: Path, *, busy_timeout: float = 5.0, prior_ttl: float = 0.0) -> SQLiteStore:
    config = SQLiteStoreConfig(path=path, busy_timeout_seconds=busy_timeout)
    return SQLiteStore(CONFIG, config, prior_ttl_seconds=prior_ttl)


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    with closing(sqlite_store(db_path, busy_timeout=0.05)) as store:
        yield store


@pytest.fixture
def raw(db_path: Path, store: SQLiteStore) -> Iterator[sqlite3.Connection]:
    """A second connection to the store's file, in autocommit mode, as another process has."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as connection:
        yield connection


# -- the file ----------------------------------------------------------------------------------


def test_the_file_is_in_wal_mode_with_the_current_schema(raw: sqlite3.Connection) -> None:
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    assert {"profiles", "events", "decisions", "population_counts"} <= tables


def test_every_thread_has_a_durable_connection_that_checks_foreign_keys(
    store: SQLiteStore,
) -> None:
    # Per-connection settings can only be seen through the store's own connections.
    seen: list[tuple[int, int, int]] = []

    def inspect() -> None:
        connection = store._connection()
        [(synchronous,)] = connection.execute("PRAGMA synchronous")
        [(foreign_keys,)] = connection.execute("PRAGMA foreign_keys")
        seen.append((id(connection), synchronous, foreign_keys))

    inspect()
    thread = threading.Thread(target=inspect)
    thread.start()
    thread.join()

    assert len({connection for connection, _, _ in seen}) == 2  # one connection per thread
    assert [(synchronous, keys) for _, synchronous, keys in seen] == [(2, 1), (2, 1)]  # FULL, ON


def test_the_connections_of_ended_threads_are_closed(store: SQLiteStore) -> None:
    for _ in range(5):
        thread = threading.Thread(target=store.ping)
        thread.start()
        thread.join()
    last = threading.Thread(target=store.ping)
    last.start()
    last.join()

    assert len(store._connections) == 2  # the setup thread's and the last thread's


def test_reopening_an_existing_file_keeps_its_data(db_path: Path, store: SQLiteStore) -> None:
    store.apply_events([withdrawal("e-1")])
    before = profile_json(store, "cust-1")

    with closing(sqlite_store(db_path)) as again:  # schema creation is idempotent
        assert profile_json(again, "cust-1") == before


def test_events_are_logged_with_utc_microseconds_and_status(
    store: SQLiteStore, raw: sqlite3.Connection
) -> None:
    recent = [withdrawal(f"e-{i}", at=T0 + timedelta(days=1, seconds=i)) for i in range(128)]
    store.apply_events(recent)
    late = withdrawal("late", at=T0 + timedelta(microseconds=7))
    assert store.apply_events([late]) == [ACCEPTED]  # older than the ring, but new to the log

    rows = raw.execute(
        "SELECT event_id, occurred_at_us, status FROM events ORDER BY seq DESC LIMIT 2"
    ).fetchall()

    t0_us = int(T0.timestamp()) * 1_000_000
    assert rows == [
        ("late", t0_us + 7, "accepted"),
        ("e-127", t0_us + (86_400 + 127) * 1_000_000, "accepted"),
    ]


def test_concurrent_writers_wait_for_the_lock_instead_of_failing(db_path: Path) -> None:
    # BEGIN IMMEDIATE takes the write lock before reading, so a waiting writer is served by the
    # busy timeout. A deferred BEGIN would read first and then fail at once (SQLITE_BUSY_SNAPSHOT,
    # which the busy handler does not retry) whenever another writer committed in between.
    threads, per_thread = 4, 50
    errors: list[BaseException] = []
    start = threading.Barrier(threads)
    config = SQLiteStoreConfig(path=db_path, busy_timeout_seconds=60.0)

    def run(shared: SQLiteStore, worker: int) -> None:
        start.wait(timeout=30)
        try:
            for event in concurrent_events(worker, per_thread):
                shared.apply_events([event])
        except BaseException as exc:
            errors.append(exc)

    with closing(SQLiteStore(ROOMY, config)) as store:
        workers = [threading.Thread(target=run, args=(store, w)) for w in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=120)

        assert errors == []
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == threads * per_thread


# -- failures ----------------------------------------------------------------------------------


def test_a_locked_file_makes_writes_unavailable_and_writes_nothing(
    store: SQLiteStore, raw: sqlite3.Connection
) -> None:
    store.apply_events([withdrawal("e-0")])
    before = profile_json(store, "cust-1")
    batch = [withdrawal("e-1", at=T0 + timedelta(hours=1)), contact("e-2", "sms")]

    raw.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked") as unavailable:
            store.apply_events(batch)
        with pytest.raises(StoreUnavailable):
            store.log_decision(decision("dec-1"))
        assert profile_json(store, "cust-1") == before  # WAL: readers do not wait for a writer
    finally:
        raw.execute("ROLLBACK")

    assert unavailable.value.retry_after > 0
    assert [e.event_id for e in store.customer_events("cust-1")] == ["e-0"]
    assert profile_json(store, "cust-1") == before
    assert store.apply_events(batch) == [ACCEPTED, ACCEPTED]


def test_a_failure_between_two_writes_rolls_back_the_whole_customer(
    store: SQLiteStore, raw: sqlite3.Connection
) -> None:
    store.apply_events([withdrawal("e-0")])
    before = profile_json(store, "cust-1")
    counts_before = raw.execute("SELECT * FROM population_counts ORDER BY 1, 2").fetchall()
    # Counting the population is the transaction's last write: by then the profile and both
    # events are written, and the request counter too (it is counted before the contact).
    raw.execute(
        "CREATE TRIGGER fail_contact BEFORE INSERT ON population_counts "
        "WHEN NEW.dimension = 'contact' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    batch = [withdrawal("e-1", at=T0 + timedelta(hours=1)), contact("e-2", "sms")]

    with pytest.raises(StoreError, match="injected failure"):
        store.apply_events(batch)

    assert profile_json(store, "cust-1") == before
    assert [e.event_id for e in store.customer_events("cust-1")] == ["e-0"]
    assert raw.execute("SELECT * FROM population_counts ORDER BY 1, 2").fetchall() == counts_before
    raw.execute("DROP TRIGGER fail_contact")
    assert store.apply_events(batch) == [ACCEPTED, ACCEPTED]


def test_a_store_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="unable to open"):
        sqlite_store(tmp_path / "missing" / "rapport.db")


def test_a_file_that_is_not_a_database_is_an_error(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database" * 100)

    with pytest.raises(StoreError, match="not a database"):
        sqlite_store(db_path)


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(IncompatibleDatabase, match="schema version"):
        sqlite_store(db_path)


def test_a_closed_store_is_unavailable(store: SQLiteStore) -> None:
    store.ping()
    store.close()

    with pytest.raises(StoreUnavailable, match="closed"):
        store.read_profile("cust-1")
    thread_error: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(store.ping, thread_error))
    thread.start()
    thread.join()
    assert isinstance(thread_error[0], StoreUnavailable)
    store.close()  # closing twice is harmless


def _capture(call: Callable[[], object], errors: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)


# -- the population prior cache ----------------------------------------------------------------


def test_the_population_prior_is_cached_for_its_ttl(db_path: Path, store: SQLiteStore) -> None:
    with closing(sqlite_store(db_path, prior_ttl=3600.0)) as cached:
        assert cached.population_prior().shares == {}

        cached.apply_events([contact("e-1", "sms")])

        assert cached.population_prior().shares == {}  # still the cached prior
        assert store.population_prior().shares["contact"] == {"sms": 1.0}  # TTL 0


# -- configuration and URLs --------------------------------------------------------------------


def test_the_config_rejects_unknown_keys_and_other_types(tmp_path: Path) -> None:
    assert SQLiteStoreConfig(path=tmp_path / "x.db").type == "sqlite"
    with pytest.raises(ValidationError, match="extra"):
        SQLiteStoreConfig.model_validate({"path": tmp_path / "x.db", "timeout": 3})
    with pytest.raises(ValidationError, match="sqlite"):
        SQLiteStoreConfig.model_validate({"type": "redis", "path": tmp_path / "x.db"})


def test_a_relative_sqlite_url_opens_a_file_under_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with closing(open_store("sqlite:///var/nested/rapport.db", CONFIG)) as store:
        assert isinstance(store, SQLiteStore)
        store.apply_events([withdrawal("e-1")])

    assert (tmp_path / "var" / "nested" / "rapport.db").is_file()


def test_an_absolute_sqlite_url_opens_that_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "rapport.db"

    with closing(open_store(f"sqlite:///{path}", CONFIG)) as store:
        assert isinstance(store, SQLiteStore)
        assert store.sqlite_config.path == path
        assert store.config is CONFIG

    assert path.is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://rapport:s3cret@db/rapport", "'postgresql'"),
        ("var/rapport.db", "scheme"),
        ("sqlite://", "file path"),
        ("sqlite:///var/rapport.db?mode=ro", "path only"),
        ("sqlite://host/var/rapport.db", "path only"),
    ],
)
def test_an_unsupported_url_is_refused_without_echoing_secrets(url: str, message: str) -> None:
    with pytest.raises(UnsupportedStoreUrl, match=message) as refused:
        open_store(url, CONFIG)

    assert "s3cret" not in str(refused.value)


# -- erasure leaves nothing in the file --------------------------------------------------------


@pytest.mark.parametrize("secure_delete", [True, False])
def test_an_erased_customer_leaves_no_trace_in_the_files_free_pages(
    db_path: Path, secure_delete: bool
) -> None:
    marker = "cust-Zq8xMarker"
    config = SQLiteStoreConfig(path=db_path, secure_delete=secure_delete)
    with closing(SQLiteStore(CONFIG, config)) as store:
        store.apply_events([withdrawal("e-other", customer_id="someone-else")])
        events = [
            withdrawal(f"e-{n}", customer_id=marker, at=T0 + timedelta(hours=n)) for n in range(200)
        ]
        store.apply_events(events)
        store.record_decision(decision("dec-1", customer_id=marker), [])
        assert store.erase_customer(marker)
        with closing(sqlite3.connect(db_path)) as raw:  # the WAL copied in and emptied
            assert raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0

        found = marker.encode() in db_path.read_bytes()

    # Without secure_delete the freed pages keep the customer: this is what the setting is for.
    assert found is not secure_delete
