"""The offline store: the event, decision and outcome logs as date-partitioned Parquet.

Layout under `root` (Hive-style partitions, so pandas, Spark, Dask and DuckDB read a table by
its folder: `pd.read_parquet(root / "events")`, `read_parquet('<root>/events/*/*.parquet',
hive_partitioning = true)`):

    <root>/_state.json                                   cursors and erasures applied
    <root>/events/date=YYYY-MM-DD/part-<first>-<last>.parquet
    <root>/decisions/date=YYYY-MM-DD/part-<first>-<last>.parquet
    <root>/outcomes/date=YYYY-MM-DD/part-<first>-<last>.parquet

`date` is the UTC day of `occurred_at` (events, outcomes) or `decided_at` (decisions); `first`
and `last` are the smallest and largest log `seq` in the file (zero-padded to 12 digits).
`outcomes` are the events of type `outcome` (also in `events`), with their join keys as columns.
Column types are fixed by `SCHEMAS` (feature_store/offline/tables.py); nested values are JSON.

`export` is incremental and idempotent:

* `_state.json` keeps a cursor (the last `seq` exported) per table; a run reads the online logs
  (`OnlineStore.read_log`) from there, page by page, saving the cursor after each page.
* The part files are the truth, the cursor only saves reading: a file holds every row of its
  partition whose `seq` lies in its range, so a row whose `seq` falls in the range of a file of
  its partition is already exported and is skipped. A crash between writing files and saving
  the cursor, or a lost state file, therefore re-reads some of the log and writes nothing twice.
  (This holds because a page is a contiguous `seq` range of the log and the log never gains an
  entry below a `seq` already read; see `OnlineStore.read_log`.) Files are written to a hidden
  temporary name, synced, then renamed, so a reader never sees half a file.
* Erasure: rows of customers whose digest is in the store's erasure records are never written,
  and a run rewrites (or deletes) every file holding rows of a customer erased since the last
  run. The digests already applied are kept in `_state.json`; without it, every file is checked.

Trimming: at the end of a run, each log is acknowledged to the online store
(`OnlineStore.acknowledge_export`) up to the cursor the run started from, which the previous
run saved after syncing its files; the online store may then drop those entries (Redis trims
its streams). So the online logs hold what the last run exported and what came since, and a
part lost after its run can still be rewritten from them by the next run. The customer export
(`complete_export`, `GET /v1/customers/{id}/export`) reads what was trimmed back from here.

Not handled yet: a merge moves online entries to the survivor without a new `seq`, so rows
exported before a merge keep the absorbed customer's id.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.decision import Decision
from engine.events import Event
from engine.identity import customer_digest
from feature_store.base import CustomerExport, LogTable, OnlineStore
from feature_store.errors import StoreError
from feature_store.offline.columnar import with_schema_version
from feature_store.offline.tables import SCHEMAS, TABLES, OfflineTable, table_rows

STATE_FILE = "_state.json"
LOCK_FILE = ".lock"
STATE_FORMAT = 1
DEFAULT_PAGE_SIZE = 50_000

_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "SCHEMAS",
    "STATE_FILE",
    "TABLES",
    "ExportInProgress",
    "ExportProgress",
    "ExportReport",
    "OfflineStore",
    "OfflineTable",
    "TableReport",
    "UnreadableState",
    "complete_export",
]


@dataclass
class TableReport:
    """What one export run did to one table."""

    rows_written: int = 0
    files_written: int = 0
    partitions: set[str] = field(default_factory=set)
    rows_erased: int = 0
    files_rewritten: int = 0
    cursor: int = 0


@dataclass
class ExportReport:
    """What one export run did: per table, and the erasure records it applied."""

    tables: dict[OfflineTable, TableReport] = field(
        default_factory=lambda: {table: TableReport() for table in TABLES}
    )
    erasures_applied: int = 0


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """Progress of one log: `position` went from `start` toward `high_water` (log seqs)."""

    log: LogTable
    start: int
    position: int
    high_water: int


ProgressCallback = Callable[[ExportProgress], None]


class OfflineStore:
    """The Parquet offline store in the folder `root` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def export(
        self,
        store: OnlineStore,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        progress: ProgressCallback | None = None,
    ) -> ExportReport:
        """Append what the online logs hold beyond the cursors, then apply new erasures.

        Raises `UnsupportedCapability` if `store` cannot read its logs, and `ExportInProgress`
        if another export holds this `root`. Safe to interrupt at any point: the next run
        completes the work without duplicates.
        Each log is acknowledged to `store` (`OnlineStore.acknowledge_export`) up to the cursor
        the run started from, so the online store may trim what the previous run saved.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self.root.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.root / LOCK_FILE):
            run = _ExportRun(self.root, store, page_size, progress)
            run.export_log("events", ("events", "outcomes"))
            run.export_log("decisions", ("decisions",))
            run.apply_erasures()
            return run.report

    def customer_history(self, customer_ids: Sequence[str]) -> tuple[list[Event], list[Decision]]:
        """The events and decisions of the offline store logged under any of `customer_ids`,
        in `seq` order, under the id they were logged with."""
        events = [
            Event.model_validate(
                {
                    "event_id": row["event_id"],
                    "customer_id": row["customer_id"],
                    "touchpoint": row["touchpoint"],
                    "channel": row["channel"],
                    "type": row["type"],
                    "occurred_at": row["occurred_at"],
                    "attributes": json.loads(row["attributes"]),
                }
            )
            for row in self._rows_of("events", customer_ids)
        ]
        decisions = [
            Decision.model_validate_json(row["body"])
            for row in self._rows_of("decisions", customer_ids)
        ]
        return events, decisions

    def _rows_of(self, table: OfflineTable, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        folder = self.root / table
        if not customer_ids or not any(_Parts(folder, SCHEMAS[table]).files()):
            return []
        rows = pq.read_table(
            folder, schema=SCHEMAS[table], filters=[("customer_id", "in", list(customer_ids))]
        )
        rows = rows.sort_by("seq")
        found: list[dict[str, Any]] = rows.to_pylist()
        return found

    def read(self, table: OfflineTable) -> pd.DataFrame:
        """Every row of `table`, in `seq` order, with the columns of `SCHEMAS[table]`."""
        folder = self.root / table
        if not any(_Parts(folder, SCHEMAS[table]).files()):
            empty: pd.DataFrame = SCHEMAS[table].empty_table().to_pandas()
            return empty
        frame = pd.read_parquet(folder, schema=SCHEMAS[table])
        return frame.sort_values("seq", kind="stable").reset_index(drop=True)


def complete_export(export: CustomerExport, offline: OfflineStore) -> CustomerExport:
    """`export` (what the online store holds) with what left it for the offline store: the
    customer's events and decisions exported under its id or a merged one's that the online
    export lacks (trimmed from the online logs once exported, or beyond the online store's
    caps). Those events come first (they are the older ones), in log order, then the online
    ones; decisions are sorted as the online export sorts them."""
    everyone = [export.customer_id, *export.merged_customer_ids]
    events, decisions = offline.customer_history(everyone)
    survivor = {"customer_id": export.customer_id}
    online_events = {event.event_id for event in export.events}
    older = [
        event.model_copy(update=survivor) for event in events if event.event_id not in online_events
    ]
    online_decisions = {decision.decision_id for decision in export.decisions}
    missing = [
        decision.model_copy(update=survivor)
        for decision in decisions
        if decision.decision_id not in online_decisions
    ]
    if not older and not missing:
        return export
    return export.model_copy(
        update={
            "events": list({e.event_id: e for e in [*older, *export.events]}.values()),
            "decisions": sorted(
                {d.decision_id: d for d in [*missing, *export.decisions]}.values(),
                key=lambda d: (d.decided_at, d.decision_id),
            ),
        }
    )


class ExportInProgress(StoreError):
    """Another export is writing to this offline store."""


class UnreadableState(StoreError):
    """`_state.json` was written by another version of the offline store."""


class _ExportRun:
    """One export: the state, the part files and the report it updates."""

    def __init__(
        self, root: Path, store: OnlineStore, page_size: int, progress: ProgressCallback | None
    ) -> None:
        self.store, self.page_size, self.progress = store, page_size, progress
        self.state = _State.load(root / STATE_FILE)
        self.parts = {table: _Parts(root / table, SCHEMAS[table]) for table in TABLES}
        self.erased = _DigestCache(store.erased_digests())
        self.report = ExportReport()

    def export_log(self, log: LogTable, tables: Sequence[OfflineTable]) -> None:
        """Write the rows of `log` beyond the tables' cursors, one page at a time."""
        start = after = min(self.state.cursors[table] for table in tables)
        while True:
            page = self.store.read_log(log, after, self.page_size)
            kept = [r for r in page.records if not self.erased.erased(r.customer_id)]
            bodies = [json.loads(record.body) for record in kept]
            for table in tables:
                columns, days, seqs = table_rows(table, kept, bodies)
                written = self.parts[table].append(columns, days, seqs)
                table_report = self.report.tables[table]
                table_report.rows_written += sum(written.values())
                table_report.files_written += len(written)
                table_report.partitions.update(written)
                self.state.cursors[table] = max(self.state.cursors[table], page.next_after)
                table_report.cursor = self.state.cursors[table]
            self.state.save()
            after = page.next_after
            if self.progress is not None:
                self.progress(ExportProgress(log, start, after, max(page.high_water, after)))
            if len(page.records) < self.page_size:
                break
        # The online store may drop the log up to where this run started: what an earlier run
        # saved (files synced, then the cursor). Not up to this run's cursor: a part lost
        # after its run (a disk, a restored backup of `_state.json`) can still be read again
        # from the online log until the next run, which finds the files and acknowledges them.
        if start:
            self.store.acknowledge_export(log, start)

    def apply_erasures(self) -> None:
        """Remove, from every file, the rows of customers erased since the last run (read now,
        so erasures recorded while the logs were read are applied too)."""
        erased = self.store.erased_digests()
        fresh = erased - self.state.erasures_applied
        for table in TABLES if fresh else ():
            _remove_customers(self.parts[table], fresh, self.report.tables[table])
        self.report.erasures_applied = len(fresh)
        self.state.erasures_applied = erased
        self.state.save()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (released by the OS if the process dies)."""
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportInProgress(f"another export is writing to {lock_path.parent}") from None
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# -- state -------------------------------------------------------------------------------------


@dataclass
class _State:
    """`_state.json`: the last seq exported per table and the erasure digests applied."""

    path: Path
    cursors: dict[OfflineTable, int]
    erasures_applied: set[str]

    @classmethod
    def load(cls, path: Path) -> _State:
        cursors: dict[OfflineTable, int] = dict.fromkeys(TABLES, 0)
        if not path.exists():
            return cls(path, cursors, set())
        data = json.loads(path.read_text())
        if data.get("format") != STATE_FORMAT:
            raise UnreadableState(f"{path}: unknown state format {data.get('format')!r}")
        for table in TABLES:
            cursors[table] = int(data["cursors"].get(table, 0))
        return cls(path, cursors, set(data["erasures_applied"]))

    def save(self) -> None:
        data = {
            "format": STATE_FORMAT,
            "cursors": self.cursors,
            "erasures_applied": sorted(self.erasures_applied),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomically(self.path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


class _DigestCache:
    """Whether a customer id is erased, hashing each id once."""

    def __init__(self, erased: set[str]) -> None:
        self.erased_set = erased
        self._known: dict[str, bool] = {}

    def erased(self, customer_id: str) -> bool:
        known = self._known.get(customer_id)
        if known is None:
            known = self._known[customer_id] = customer_digest(customer_id) in self.erased_set
        return known


# -- part files --------------------------------------------------------------------------------


class _Parts:
    """The part files of one table and the seq ranges they cover, per partition (day)."""

    def __init__(self, folder: Path, schema: Any) -> None:
        self.folder, self.schema = folder, schema
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        for path in self.files():
            first, last = _range_of(path)
            self.ranges.setdefault(_day_of(path), []).append((first, last))
        for day_ranges in self.ranges.values():
            day_ranges.sort()
        for leftover in folder.glob("date=*/.*.tmp"):  # from a run that was interrupted
            leftover.unlink()

    def files(self) -> Iterator[Path]:
        return (path for path in sorted(self.folder.glob("date=*/part-*.parquet")))

    def append(
        self, columns: dict[str, list[Any]], days: np.ndarray, seqs: np.ndarray
    ) -> dict[str, int]:
        """Write the rows not yet covered, one file per day; return rows written per day."""
        written: dict[str, int] = {}
        if len(seqs) == 0:
            return written
        table = pa.Table.from_pydict(columns, schema=self.schema)
        unique_days, day_of_row = np.unique(days, return_inverse=True)
        by_day = np.argsort(day_of_row, kind="stable")  # row positions grouped by day
        bounds = np.searchsorted(day_of_row[by_day], np.arange(len(unique_days) + 1))
        for number, day in enumerate(unique_days.tolist()):
            positions = by_day[bounds[number] : bounds[number + 1]]
            positions = positions[~self._covered(day, seqs[positions])]
            if len(positions) == 0:
                continue
            first, last = int(seqs[positions].min()), int(seqs[positions].max())
            rows = table.take(pa.array(positions))
            path = self.folder / f"date={day}" / f"part-{first:012d}-{last:012d}.parquet"
            if path.exists():  # only if the files' invariant was broken by hand: keep both
                rows = _union_by_seq(pq.read_table(path, schema=self.schema), rows)
            _write_parquet(path, rows)
            self.ranges.setdefault(day, []).append((first, last))
            self.ranges[day].sort()
            written[day] = len(positions)
        return written

    def _covered(self, day: str, seqs: np.ndarray) -> np.ndarray:
        ranges = self.ranges.get(day)
        if not ranges:
            return np.zeros(len(seqs), dtype=bool)
        firsts = np.array([first for first, _ in ranges], dtype=np.int64)
        lasts = np.array([last for _, last in ranges], dtype=np.int64)
        index = np.searchsorted(firsts, seqs, side="right") - 1
        covered: np.ndarray = (index >= 0) & (seqs <= lasts[np.maximum(index, 0)])
        return covered


def _remove_customers(parts: _Parts, digests: set[str], report: TableReport) -> None:
    """Rewrite every file of the table that holds rows of the customers with `digests`."""
    for path in list(parts.files()):
        customers = pq.read_table(path, columns=["customer_id"]).column("customer_id")
        erased = {c for c in customers.unique().to_pylist() if customer_digest(c) in digests}
        if not erased:
            continue
        table = pq.read_table(path, schema=parts.schema)
        keep = pc.invert(pc.is_in(table.column("customer_id"), pa.array(sorted(erased))))
        kept = table.filter(keep)
        report.rows_erased += table.num_rows - kept.num_rows
        report.files_rewritten += 1
        if kept.num_rows:
            _write_parquet(path, kept)
        else:  # rows of erased customers never come back, so the range needs no file
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()


def _write_parquet(path: Path, table: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = with_schema_version(table)  # read back by feature_store.offline.columnar
    _replace_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a hidden temporary file beside `path`, sync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as written:
        os.fsync(written.fileno())
    os.replace(tmp, path)


def _union_by_seq(existing: Any, new: Any) -> Any:
    combined = pa.concat_tables([existing, new])
    _, first_rows = np.unique(combined.column("seq").to_numpy(), return_index=True)
    return combined.take(pa.array(first_rows))


def _range_of(path: Path) -> tuple[int, int]:
    match = _PART.match(path.name)
    if match is None:
        raise ValueError(f"not a part file: {path}")
    return int(match[1]), int(match[2])


def _day_of(path: Path) -> str:
    return path.parent.name.removeprefix("date=")
