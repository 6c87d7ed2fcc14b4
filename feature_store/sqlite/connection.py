"""Connections to one SQLite file, shared by the store, the API keys and the experiments.

`ThreadConnections` gives each thread its own connection (a `sqlite3.Connection` must not be
used by two threads at once), closes those of ended threads, and closes them all at `close()`.
`translated_errors` turns SQLite's errors into store errors, so callers never handle `sqlite3`.
A connection must not cross a fork: open the owner in the process that uses it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from feature_store.errors import StoreError, StoreUnavailable

#: Retry-after hints, in seconds: a held lock clears quickly, a disk or file problem does not.
RETRY_AFTER_BUSY = 1.0
RETRY_AFTER_FAULT = 5.0


def connect(
    path: Path, *, busy_timeout_seconds: float, pragmas: Sequence[str]
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are begun explicitly), with `pragmas` run.

    `check_same_thread=False`: one thread uses it; whoever calls `close()` may close it.
    """
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout_seconds,  # SQLite's busy timeout, also between processes
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        for pragma in pragmas:
            connection.execute(pragma)
    except BaseException:
        connection.close()
        raise
    return connection


class ThreadConnections:
    """One connection per thread to `path`, each set up with `pragmas`.

    `what` names the owner in errors ("the SQLite store"). After `close()`, `connection()`
    raises `StoreUnavailable` in every thread.
    """

    def __init__(
        self, path: Path, *, busy_timeout_seconds: float, pragmas: Sequence[str], what: str
    ) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self.pragmas = tuple(pragmas)
        self.what = what
        self._local = threading.local()
        self._open: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def open_connections(self) -> list[tuple[threading.Thread, sqlite3.Connection]]:
        """The connections open now, with the thread of each."""
        with self._lock:
            return list(self._open)

    @property
    def closed(self) -> bool:
        return self._closed

    def connection(self) -> sqlite3.Connection:
        """The calling thread's connection, opened on first use."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if self._closed:
            raise StoreUnavailable(f"{self.what} is closed", retry_after=RETRY_AFTER_FAULT)
        if connection is None:
            connection = self._open_for(threading.current_thread())
            self._local.connection = connection
        return connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._open = self._open, []
        for _, connection in connections:
            connection.close()

    def _open_for(self, current: threading.Thread) -> sqlite3.Connection:
        connection = connect(
            self.path, busy_timeout_seconds=self.busy_timeout_seconds, pragmas=self.pragmas
        )
        with self._lock:
            if self._closed:
                connection.close()
                raise StoreUnavailable(f"{self.what} is closed", retry_after=RETRY_AFTER_FAULT)
            # Connections of threads that have ended would otherwise stay open until close().
            ended = [entry for entry in self._open if not entry[0].is_alive()]
            self._open = [entry for entry in self._open if entry[0].is_alive()]
            self._open.append((current, connection))
        for _, stale in ended:
            stale.close()
        return connection


def enable_wal(
    connection: sqlite3.Connection, path: Path, error: type[StoreError] = StoreError
) -> None:
    """Switch the file to WAL (readers never wait for the writer); raise `error` if it cannot
    (e.g. a file system without shared memory)."""
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise error(f"{path}: SQLite cannot use WAL here (journal mode {mode!r})")


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One IMMEDIATE transaction (the write lock taken before anything is read, so it can never
    fail half-way with SQLITE_BUSY_SNAPSHOT): committed if the block returns, rolled back if
    it raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        roll_back(connection)
        raise


def roll_back(connection: sqlite3.Connection) -> None:
    """End the connection's transaction, if it is still open, discarding its writes."""
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite has rolled back by itself after the errors that make ROLLBACK fail


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Raise SQLite's errors as store errors naming `what`: `StoreUnavailable` for operational
    errors (a held lock, a lost file), with a retry hint, `StoreError` for the rest."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        busy = exc.sqlite_errorname in ("SQLITE_BUSY", "SQLITE_LOCKED")
        raise StoreUnavailable(
            f"{what} unavailable: {exc}",
            retry_after=RETRY_AFTER_BUSY if busy else RETRY_AFTER_FAULT,
        ) from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{what} error: {exc}") from exc
