"""Point-in-time replay on a Dask cluster: the offline store partitioned by customer.

What runs where:

* **split** (workers, one task per Parquet file of the offline store): each file's rows go to
  partition `customer_partition(customer_id, partitions)` (a stable 64-bit BLAKE2b hash of
  the customer id, modulo the number of partitions), written as one Parquet file per
  (source file, partition) under `work_dir/split/<table>/p=NNNNN/`. Each file's schema
  version is checked (`feature_store.offline.columnar`).
* **replay** (workers, one task per partition): the partition's events, decisions and
  outcomes, in log (`seq`) order, go through `training.dataset.examples_from_logs`, the very
  function the single-process replay runs, and the examples are written to
  `work_dir/examples/part-NNNNN.parquet`. A customer's whole history is in one partition, so
  each partition replays its customers independently, in time order.
* **gather** (the client): the example files, read and sorted as `training_examples` sorts
  (decided_at, decision_id, item_kind, item_rank, item_id): the same frame as
  `training.dataset.load_examples` on one process. Training (ALS and the propensity models)
  then runs on the client, from that frame, as it does without a cluster.

The workers must see `offline_root` and `work_dir` at the same paths (one machine, or a shared
volume). One caveat against the single-process replay: an outcome is joined to its decision
within the partition of the customer it was logged under, so an outcome logged under another
customer id than its decision (a merge between the two) is not a label here.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from distributed import Client, LocalCluster

from engine.config import EngineConfig
from feature_store.offline.columnar import EVENT_COLUMNS, check_schema, read_events
from feature_store.offline.tables import SCHEMAS, TABLES, OfflineTable

#: The name of the partitioning recorded with a run.
PARTITIONING = "blake2b64(customer_id) mod partitions"
#: Example order, as `feature_store.offline.replay.training_examples` sorts.
EXAMPLE_ORDER = ["decided_at", "decision_id", "item_kind", "item_rank", "item_id"]


def customer_partition(customer_id: str, partitions: int) -> int:
    """The partition of a customer: stable across processes and machines."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def partitions_of(customer_ids: pa.ChunkedArray | pa.Array, partitions: int) -> np.ndarray:
    """The partition of each row's customer (hashed once per distinct customer)."""
    encoded = pc.dictionary_encode(customer_ids)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array([], pa.string())
    if len(encoded) == 0:
        return np.zeros(0, dtype=np.int64)
    dictionary = encoded.dictionary.to_pylist()
    of_value = np.array([customer_partition(c, partitions) for c in dictionary], dtype=np.int64)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    partition_of_row: np.ndarray = of_value[indices]
    return partition_of_row


@dataclass(frozen=True)
class Cluster:
    """What a run was given: its scheduler and workers."""

    scheduler: str
    workers: int
    threads: int
    local: bool


@dataclass(frozen=True)
class PartitionReport:
    """One partition's replay, measured on its worker."""

    partition: int
    events: int
    decisions: int
    examples: int
    seconds: float
    cpu_seconds: float
    worker: str
    peak_rss_bytes: int  # the worker process's peak during this task (Linux), in bytes


@dataclass
class DistributedReplay:
    """The gathered examples and how they were made."""

    examples: pd.DataFrame
    cluster: Cluster
    partitions: int
    phase_seconds: dict[str, float] = field(default_factory=dict)
    reports: list[PartitionReport] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(r.events for r in self.reports)

    def params(self) -> dict[str, str | int | float]:
        """For MLflow: the cluster, the partitioning and each phase's wall time (seconds)."""
        cpu = sum(r.cpu_seconds for r in self.reports)
        peak = max((r.peak_rss_bytes for r in self.reports), default=0)
        return {
            "dask.scheduler": self.cluster.scheduler,
            "dask.local_cluster": str(self.cluster.local),
            "dask.workers": self.cluster.workers,
            "dask.threads": self.cluster.threads,
            "replay.partitioning": PARTITIONING,
            "replay.partitions": self.partitions,
            "replay.events": self.events,
            "replay.cpu_seconds": round(cpu, 3),
            "replay.events_per_cpu_second": round(self.events / cpu) if cpu else 0,
            "replay.peak_worker_rss_mb": round(peak / 2**20, 1),
            **{f"phase.{name}_seconds": round(s, 3) for name, s in self.phase_seconds.items()},
        }


@contextmanager
def connect(scheduler: str | None = None, *, workers: int | None = None) -> Iterator[Client]:
    """A client of the cluster at `scheduler` (tcp://host:8786), or of a local cluster of
    `workers` worker processes (one per core by default), one thread each, closed after."""
    if scheduler:
        with Client(scheduler) as client:  # type: ignore[no-untyped-call]
            yield client
        return
    count = workers or os.cpu_count() or 1
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


#: `--scheduler` / RAPPORT_DASK_SCHEDULER value for a local cluster, one worker per core.
LOCAL = "local"


def replay_on_cluster(
    scheduler: str,
    offline_root: Path,
    config: EngineConfig,
    *,
    work_dir: Path | None = None,
    partitions: int | None = None,
    label_window: timedelta | None = None,
) -> DistributedReplay:
    """`distributed_examples` on the cluster at `scheduler`, or on a local cluster started
    for it (`LOCAL`). Work files go to `work_dir`, by default `_replay` beside the tables
    (the examples are kept there as Parquet, under `examples/`)."""
    local = scheduler == LOCAL
    work = work_dir or offline_root / "_replay"
    with connect(None if local else scheduler) as client:
        return distributed_examples(
            client,
            offline_root,
            work,
            config,
            partitions=partitions,
            label_window=label_window,
            local=local,
        )


def cluster_of(client: Client, *, local: bool) -> Cluster:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return Cluster(
        scheduler=str(info.get("address", "")),
        workers=len(workers),
        threads=sum(int(w.get("nthreads", 0)) for w in workers.values()),
        local=local,
    )


def distributed_examples(
    client: Client,
    offline_root: Path,
    work_dir: Path,
    config: EngineConfig,
    *,
    partitions: int | None = None,
    label_window: timedelta | None = None,
    local: bool = False,
) -> DistributedReplay:
    """The training examples of the offline store at `offline_root`, replayed on the
    cluster of `client` in `partitions` customer partitions (`default_partitions` if None);
    intermediate files go under `work_dir` (see the module docstring)."""
    from training.dataset import applied_erasures

    cluster = cluster_of(client, local=local)
    count = partitions or default_partitions(offline_root, cluster.threads)
    phases: dict[str, float] = {}
    for previous in ("split", "examples"):  # a former run's partitions, maybe of another count
        shutil.rmtree(work_dir / previous, ignore_errors=True)

    began = time.perf_counter()
    split_root = work_dir / "split"
    sources = [
        (table, str(path))
        for table in TABLES
        for path in sorted((offline_root / table).glob("date=*/part-*.parquet"))
    ]
    split_futures = client.map(
        _split_file,
        [t for t, _ in sources],
        [p for _, p in sources],
        [str(split_root)] * len(sources),
        [count] * len(sources),
        pure=False,
    )
    client.gather(split_futures)  # type: ignore[no-untyped-call]
    phases["split"] = time.perf_counter() - began

    began = time.perf_counter()
    examples_root = work_dir / "examples"
    examples_root.mkdir(parents=True, exist_ok=True)
    erased = applied_erasures(offline_root)
    futures = client.map(
        replay_partition,
        list(range(count)),
        [str(split_root)] * count,
        [str(examples_root)] * count,
        [config] * count,
        [erased] * count,
        [label_window] * count,
        pure=False,
    )
    reports: list[PartitionReport] = client.gather(futures)  # type: ignore[no-untyped-call]
    phases["replay"] = time.perf_counter() - began

    began = time.perf_counter()
    examples = gather_examples(examples_root, [r for r in reports if r.examples])
    phases["gather"] = time.perf_counter() - began
    return DistributedReplay(examples, cluster, count, phases, reports)


#: Logged events per partition that the default partitioning aims at: a partition's replay
#: holds its rows and examples in memory (about 1.3 GB at 290k events, measured).
PARTITION_EVENTS = 100_000


def default_partitions(offline_root: Path, threads: int) -> int:
    """At least 4 partitions per worker thread (so that uneven partitions even out), more
    when needed for `PARTITION_EVENTS` events each (counted from the files' footers)."""
    events: int = sum(
        int(pq.ParquetFile(path).metadata.num_rows)
        for path in (offline_root / "events").glob("date=*/part-*.parquet")
    )
    return max(1, 4 * threads, -(-events // PARTITION_EVENTS))


def _split_file(table: OfflineTable, source: str, split_root: str, partitions: int) -> int:
    """Write the rows of one offline file to its customers' partitions; the rows split."""
    path = Path(source)
    check_schema(path)
    rows = pq.read_table(path, schema=SCHEMAS[table])
    if rows.num_rows == 0:
        return 0
    of_row = partitions_of(rows["customer_id"], partitions)
    name = f"{path.parent.name}-{path.stem}.parquet"
    order = np.argsort(of_row, kind="stable")
    bounds = np.searchsorted(of_row[order], np.arange(partitions + 1))
    for partition in range(partitions):
        positions = order[bounds[partition] : bounds[partition + 1]]
        if len(positions) == 0:
            continue
        target = Path(split_root) / table / f"p={partition:05d}" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        pq.write_table(rows.take(pa.array(positions)), temporary)
        temporary.replace(target)
    return int(rows.num_rows)


def _partition_files(split_root: Path, table: OfflineTable, partition: int) -> list[Path]:
    return sorted((split_root / table / f"p={partition:05d}").glob("*.parquet"))


def _read_frame(paths: Sequence[Path], table: OfflineTable) -> pd.DataFrame:
    schema = SCHEMAS[table]
    if not paths:
        empty: pd.DataFrame = schema.empty_table().to_pandas()
        return empty
    frame: pd.DataFrame = pa.concat_tables(
        [pq.read_table(p, schema=schema) for p in paths]
    ).to_pandas()
    return frame.sort_values("seq", kind="stable").reset_index(drop=True)


def read_partition_events(paths: Sequence[Path]) -> pa.Table:
    """A partition's events in log (`seq`) order, with the replay columns."""
    table = read_events(paths, SCHEMAS["events"], columns=(*EVENT_COLUMNS, "seq"))
    return table.sort_by("seq").drop_columns(["seq"])


def replay_partition(
    partition: int,
    split_root: str,
    examples_root: str,
    config: EngineConfig,
    erased: frozenset[str],
    label_window: timedelta | None,
) -> PartitionReport:
    """Replay one partition (`training.dataset.examples_from_logs`) and write its examples."""
    from training.dataset import examples_from_logs

    began, cpu_began = time.perf_counter(), time.process_time()
    _reset_peak_rss()
    root = Path(split_root)
    events = read_partition_events(_partition_files(root, "events", partition))
    decisions = _read_frame(_partition_files(root, "decisions", partition), "decisions")
    outcomes = _read_frame(_partition_files(root, "outcomes", partition), "outcomes")
    examples = examples_from_logs(
        events, decisions, outcomes, config, erased=erased, label_window=label_window
    )
    if len(examples):
        target = Path(examples_root) / f"part-{partition:05d}.parquet"
        examples.to_parquet(target, index=False)
    return PartitionReport(
        partition=partition,
        events=int(events.num_rows),
        decisions=len(decisions),
        examples=len(examples),
        seconds=time.perf_counter() - began,
        cpu_seconds=time.process_time() - cpu_began,
        worker=_worker_name(),
        peak_rss_bytes=_peak_rss_bytes(),
    )


def _reset_peak_rss() -> None:
    """Start this process's peak resident set size afresh (Linux), so the peak is the task's:
    a worker forked from a big client inherits its peak otherwise."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_bytes() -> int:
    """The process's peak resident set size since `_reset_peak_rss` (Linux), or ever."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:  # not on a worker (called directly)
        return "local"


def gather_examples(examples_root: Path, reports: Sequence[PartitionReport]) -> pd.DataFrame:
    """The partitions' examples as one frame, in the single-process replay's order."""
    paths = [examples_root / f"part-{r.partition:05d}.parquet" for r in reports]
    if not paths:
        from training.dataset import examples_from_logs

        empty: pd.DataFrame = examples_from_logs([], [], [], EngineConfig())
        return empty
    frames = [pd.read_parquet(path) for path in paths]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(EXAMPLE_ORDER, kind="stable", na_position="last").reset_index(
        drop=True
    )
    for column in frame.columns:
        # Parquet gives text with gaps as objects; the replay's frame infers the column from
        # its values (text with None as missing), as a frame of the rows does.
        if frame[column].dtype == object:
            frame[column] = pd.Series(frame[column].tolist(), name=column)
    return frame


def describe(replay: DistributedReplay) -> dict[str, Any]:
    """A summary for people: per phase seconds and per partition figures."""
    return {
        "cluster": replay.cluster,
        "partitions": replay.partitions,
        "phases": replay.phase_seconds,
        "events": replay.events,
        "examples": len(replay.examples),
    }
