"""One writer thread per store instance, committing queued writes in groups.

Callers `submit` a write (a function of the writer's connection, run inside a transaction) and
wait on the returned future. The writer takes the first queued write, then everything queued
behind it (up to `max_group`), and runs them all in one `BEGIN IMMEDIATE` transaction, each in
a savepoint of its own: a write that raises is rolled back alone and its future gets the error,
the others commit together. So concurrent writers share one commit (one fsync) instead of
fighting for SQLite's write lock in turn. Other processes on the same file have their own
writer; SQLite's lock orders the processes, and `BEGIN IMMEDIATE` waits up to the busy timeout.

A group commits with `synchronous = FULL` (the write-ahead log synced, so on disk when the
future resolves) if any of its writes is `durable`, else with `NORMAL` (safe from a process
crash, not from a power loss).

`GroupHooks` lets the owner add work to every group (the store writes its pending decision log
there) and ask for a group when nothing is queued (`due`: a group must run by that monotonic
time, even an empty one).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Write = Callable[[sqlite3.Connection], Any]


class GroupHooks(Protocol):
    def in_group(self, db: sqlite3.Connection) -> Callable[[], None] | None:
        """Run first in every group's transaction; return what to do once it has committed."""

    def due(self) -> float | None:
        """The monotonic time by which a group must run even if nothing is queued, or None."""


@dataclass(slots=True)
class _Request:
    write: Write
    durable: bool
    future: Future[Any] = field(default_factory=Future)


@dataclass(slots=True)
class GroupStats:
    """How the writer grouped its work: `groups` committed (or failed), `requests` in them,
    `largest` group."""

    groups: int = 0
    requests: int = 0
    largest: int = 0

    @property
    def mean(self) -> float:
        return self.requests / self.groups if self.groups else 0.0


_STOP = object()


class GroupWriter:
    """The writer thread on `connection` (which it owns from now on, and closes at `stop`)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        hooks: GroupHooks,
        *,
        max_group: int = 512,
        idle_poll_seconds: float = 0.25,
        name: str = "sqlite-writer",
    ) -> None:
        self._db = connection
        self._hooks = hooks
        self._max_group = max_group
        self._idle_poll = idle_poll_seconds
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._accepting = True
        self._accept_lock = threading.Lock()
        self._synchronous = ""
        self.stats = GroupStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, write: Write, *, durable: bool) -> Future[Any]:
        """Queue `write`; the future resolves once its group has committed (or has failed).
        Raises `RuntimeError` once the writer is stopping."""
        request = _Request(write, durable)
        with self._accept_lock:
            if not self._accepting:
                raise RuntimeError("the writer is stopped")
            self._queue.put(request)
        return request.future

    def stop(self, timeout: float | None = None) -> None:
        """Run what is queued, one last group (the hooks flush), and end the thread."""
        with self._accept_lock:
            if not self._accepting:
                return
            self._accepting = False
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self._db.close()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group: list[_Request] = []
            item = self._next(self._wait_seconds())
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Request)
                group.append(item)
                if len(group) >= self._max_group:
                    break
                item = self._next(0.0)
            if group or self._is_due() or stopping:
                self._commit(group)

    def _next(self, timeout: float | None) -> _Request | object | None:
        try:
            if timeout == 0.0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _wait_seconds(self) -> float:
        due = self._hooks.due()
        if due is None:
            return self._idle_poll
        return min(self._idle_poll, max(0.0, due - time.monotonic()))

    def _is_due(self) -> bool:
        due = self._hooks.due()
        return due is not None and due <= time.monotonic()

    def _commit(self, group: list[_Request]) -> None:
        self.stats.groups += 1
        self.stats.requests += len(group)
        self.stats.largest = max(self.stats.largest, len(group))
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._set_synchronous("FULL" if any(r.durable for r in group) else "NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            after = self._in_savepoint(self._hooks.in_group)
            for request in group:
                outcomes.append(self._in_savepoint(request.write))
            self._db.execute("COMMIT")
        except BaseException as exc:  # nothing of the group committed: every write fails
            self._roll_back()
            for request in group:
                request.future.set_exception(exc)
            return
        if after[0] and after[1] is not None:
            after[1]()
        for request, (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                request.future.set_result(value)
            else:
                request.future.set_exception(value)

    def _in_savepoint(self, write: Write) -> tuple[bool, Any]:
        """Run `write` in a savepoint: (True, its result), or (False, its error) rolled back."""
        self._db.execute("SAVEPOINT request")
        try:
            value = write(self._db)
        except Exception as exc:  # this write only; the transaction goes on
            # If SQLite rolled the whole transaction back (a disk error), this raises and the
            # group fails.
            self._db.execute("ROLLBACK TO request")
            self._db.execute("RELEASE request")
            return False, exc
        self._db.execute("RELEASE request")
        return True, value

    def _set_synchronous(self, level: str) -> None:
        if level != self._synchronous:
            self._db.execute(f"PRAGMA synchronous = {level}")  # one of two fixed words
            self._synchronous = level

    def _roll_back(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself after the errors that make ROLLBACK fail
