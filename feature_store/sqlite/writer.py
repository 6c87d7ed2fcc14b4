"""One writer per store instance, committing queued writes in groups.

Callers `run` a write (a function of the writer's connection, run inside a transaction). Writes
queue in arrival order; the thread whose write is at the front of the queue becomes the writer
for everything queued at that moment (up to `max_group`) and runs it all in one `BEGIN IMMEDIATE`
transaction on the store's one writer connection, each write in a savepoint of its own: a write
that raises is rolled back alone and its caller gets the error, the others commit together.
While that group commits, later writes queue behind it and form the next group. So concurrent
writers of a process share one commit (one fsync) instead of fighting for SQLite's write lock in
turn, and only one thread of the process ever waits for that lock. This is LevelDB's write
queue: the writer role passes between the waiting callers instead of living in a thread of its
own, which would cost every write two thread switches (measured: ~1.5x the CPU of the same work
on this 2-core machine, and more under load, as the writer waits to be scheduled). A background
thread runs a group when `GroupHooks.due` says one is due and no caller is writing, and, given
a `checkpointer` connection, copies the write-ahead log into the database (a PASSIVE checkpoint,
which never blocks the writer) after commits, so that the writer does not stop for checkpoints
(its connection should have a high `wal_autocheckpoint`, as a safety net only).

Other processes on the same file have their own writer; SQLite's lock orders the processes,
and `BEGIN IMMEDIATE` waits up to the busy timeout.

A group commits with `synchronous = FULL` (the write-ahead log synced, so on disk when `run`
returns) if any of its writes is `durable`, else with `NORMAL` (safe from a process crash, not
from a power loss).

`GroupHooks` lets the owner add work to every group (the store writes its pending decision log
there) and ask for a group when nothing is queued.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from feature_store.sqlite.connection import roll_back

Write = Callable[[sqlite3.Connection], Any]


class GroupHooks(Protocol):
    def in_group(self, db: sqlite3.Connection) -> Callable[[], None] | None:
        """Run last in every group's transaction while `due` is not None (there is work);
        return what to do once it has committed."""

    def due(self) -> float | None:
        """The monotonic time by which a group must run even if nothing is queued, or None if
        the hooks have no work."""


@dataclass(slots=True)
class _Request:
    write: Write | None  # None: a group of the hooks' work only
    durable: bool
    done: bool = False
    ok: bool = False
    value: Any = field(default_factory=lambda: WriterStopped("the write did not run"))


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


class WriterStopped(Exception):
    """The writer was stopped (its store closed)."""


class GroupWriter:
    """The writer on `connection` (which it owns from now on, and closes at `stop`)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        hooks: GroupHooks,
        *,
        checkpointer: sqlite3.Connection | None = None,
        max_group: int = 512,
        idle_poll_seconds: float = 0.05,
        name: str = "sqlite-writer-background",
    ) -> None:
        self._db = connection
        self._checkpointer = checkpointer
        self._committed_since_checkpoint = False
        self._hooks = hooks
        self._max_group = max_group
        self._idle_poll = idle_poll_seconds
        self._queue: list[_Request] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._synchronous = ""
        self.stats = GroupStats()
        self._stop_flusher = threading.Event()
        self._flusher = threading.Thread(target=self._flush_when_due, name=name, daemon=True)
        self._flusher.start()

    def run(self, write: Write | None, *, durable: bool) -> Any:
        """Run `write` in a group and return its result once the group has committed, or raise
        its error (or the group's: then nothing of it committed). `None` runs a group of the
        hooks' work alone. Raises `WriterStopped` once the writer is stopped."""
        with self._changed:
            if self._stopping:
                raise WriterStopped("the writer is stopped")
        return self._run(write, durable=durable)

    def _run(self, write: Write | None, *, durable: bool) -> Any:
        request = _Request(write, durable)
        with self._changed:
            self._queue.append(request)
            while not request.done and self._queue[0] is not request:
                self._changed.wait()
            group = [] if request.done else self._queue[: self._max_group]
        if group:  # this thread is the writer for the group it leads
            try:
                self._commit(group)
            finally:
                with self._changed:
                    del self._queue[: len(group)]
                    for member in group:
                        member.done = True
                    self._changed.notify_all()
        if request.ok:
            return request.value
        raise request.value

    def stop(self) -> None:
        """Refuse new writes, let those queued finish, run one last group (the hooks flush)
        and close the connection. If that group fails, what it held stays unwritten."""
        with self._changed:
            if self._stopping:
                return
            self._stopping = True
        self._stop_flusher.set()
        if threading.current_thread() is not self._flusher:
            self._flusher.join()
        with contextlib.suppress(Exception):
            self._run(None, durable=True)
        self._db.close()
        if self._checkpointer is not None:
            self._checkpointer.close()

    # -- the flusher thread --------------------------------------------------------------------

    def _flush_when_due(self) -> None:
        while not self._stop_flusher.wait(self._wait_seconds()):
            due = self._hooks.due()
            if due is not None and due <= time.monotonic():
                with contextlib.suppress(Exception):  # retried at the next poll; callers see it
                    self.run(None, durable=False)
            if self._checkpointer is not None and self._committed_since_checkpoint:
                self._committed_since_checkpoint = False
                with contextlib.suppress(sqlite3.Error):  # busy: another process checkpoints
                    self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _wait_seconds(self) -> float:
        due = self._hooks.due()
        if due is None:
            return self._idle_poll
        return min(self._idle_poll, max(0.0, due - time.monotonic()))

    # -- a group -------------------------------------------------------------------------------

    def _commit(self, group: list[_Request]) -> None:
        """Run `group` in one transaction; record each request's outcome in it."""
        self.stats.groups += 1
        self.stats.requests += len(group)
        self.stats.largest = max(self.stats.largest, len(group))
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._set_synchronous("FULL" if any(r.durable for r in group) else "NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            if len(group) == 1 and group[0].write is not None:
                outcomes.append((True, group[0].write(self._db)))  # its failure is the group's
            else:
                for request in group:
                    write = request.write
                    outcomes.append(self._in_savepoint(write) if write else (True, None))
            # Last, so that a failure of the hooks' work costs the group nothing.
            idle = self._hooks.due() is None
            after = (True, None) if idle else self._in_savepoint(self._hooks.in_group)
            self._db.execute("COMMIT")
        except BaseException as exc:  # nothing of the group committed: every write fails
            roll_back(self._db)
            for request in group:
                request.ok, request.value = False, exc
            return
        self._committed_since_checkpoint = True
        if after[0] and after[1] is not None:
            after[1]()
        for request, (ok, value) in zip(group, outcomes, strict=True):
            request.ok, request.value = ok, value

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
