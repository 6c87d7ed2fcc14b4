"""The decision log written behind the response: decisions returned but not yet committed.

`SQLiteStore.record_decision` writes a decision that delivered actions in the same transaction
as their exposures, which must be committed before it returns (they count toward caps, in
every process). A decision without exposures needs no write before the answer: its log entry
waits here. The writer (feature_store/sqlite/writer.py) writes every pending entry in the next
group it commits, whatever that group holds, and its background thread runs a group of its own
when the oldest entry has waited half the loss window. So an entry is committed within about
half of `loss_window_seconds` of being recorded while the file is writable; `record_decision`
itself waits for the writer when the oldest entry is older than the whole window (the file
locked, a slow disk), so a crash (kill -9 included) never loses a decision returned more than
the window before it. A pending entry is visible to `read_decision` in this process, so an
outcome for a just-returned decision is accepted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from engine.decision import Decision
from feature_store.sqlite import rows


class PendingDecisions:
    """Decisions waiting for the writer, in the order they were recorded (thread-safe)."""

    def __init__(self, loss_window_seconds: float) -> None:
        self.loss_window_seconds = loss_window_seconds
        self._lock = threading.Lock()
        # decision_id -> (decision, monotonic time recorded); a dict keeps insertion order.
        self._pending: dict[str, tuple[Decision, float]] = {}
        self.flushed = 0  # entries committed so far (for reports)

    def add(self, decision: Decision) -> bool:
        """Hold `decision` for the writer; False if one with its id is already held."""
        with self._lock:
            if decision.decision_id in self._pending:
                return False
            self._pending[decision.decision_id] = (decision, time.monotonic())
            return True

    def get(self, decision_id: str) -> Decision | None:
        with self._lock:
            held = self._pending.get(decision_id)
        return None if held is None else held[0]

    def behind(self) -> bool:
        """True if the oldest entry has waited longer than the loss window."""
        oldest = self._oldest()
        return oldest is not None and time.monotonic() - oldest > self.loss_window_seconds

    def __len__(self) -> int:
        return len(self._pending)

    # -- GroupHooks (the writer thread) ---------------------------------------------------------

    def due(self) -> float | None:
        oldest = self._oldest()
        return None if oldest is None else oldest + self.loss_window_seconds / 2

    def in_group(self, db: sqlite3.Connection) -> Callable[[], None] | None:
        """Write every pending entry in the writer's transaction; they leave this buffer once
        it has committed (until then `read_decision` finds them here)."""
        with self._lock:
            taken = [decision for decision, _ in self._pending.values()]
        if not taken:
            return None
        rows.log_decisions(db, taken)

        def committed() -> None:
            with self._lock:
                for decision in taken:
                    self._pending.pop(decision.decision_id, None)
                self.flushed += len(taken)

        return committed

    def _oldest(self) -> float | None:
        with self._lock:
            for _, recorded_at in self._pending.values():
                return recorded_at
        return None
