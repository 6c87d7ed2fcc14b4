"""Training time at a given size of the event log, and the scoring latency of the bundle.

    .venv/bin/python -m bench.training_time --events 1000000 [--decisions-per-customer 4]
        [--shard-customers 5000] [--threads 1] [--seed 7] [--json report.json]

Set-up: synthetic customers (about 72 events each over 180 days) enough for `--events`
population events, in shards of `--shard-customers` simulated and replayed one after another
(so memory holds one shard's `Event` objects at a time, and every shard's examples): each shard
is `training.simulation.logged_data.simulate_logs` with `--decisions-per-customer` decisions per
customer,
answered from the latent truth (its exposures and outcome events are logged too). Customer and
decision ids get the shard's prefix, so the shards together are one population's examples.

Phases, timed apart, wall clock and CPU seconds of this process:

* simulate: the population and its logged decisions (data preparation, not training);
* examples: `training.dataset.examples_from_logs`, the point-in-time replay of the fold;
* train: `training.train.train` on every example (its stages are reported too);
* scoring: `ModelBundle.action_posteriors` for every catalogue action (16) per decision, on
  the facts of `--score` logged decisions of the last shard (point-in-time, as served):
  median and 99th percentile; and the median of `default_acceptance` for the habits behind
  the decisions' defaults, over the decisions that had some.

Figures depend on the machine and what else runs on it: the load average is printed.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import typer

from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.config import EngineConfig
from engine.decision import Decision, DecisionRequest
from engine.events import Channel, Event, EventType
from engine.habits import UsualRequest
from feature_store.offline.columnar import with_schema_version
from feature_store.offline.replay import point_in_time_facts
from feature_store.offline.tables import SCHEMAS
from training.bundle import ModelBundle
from training.dataset import examples_from_logs
from training.simulation.logged_data import SimulatedLogs, simulate_logs
from training.train import TrainConfig, TrainResult, train

#: Population events per customer over 180 days (measured: 71.7 at 1,000 customers).
EVENTS_PER_CUSTOMER = 72
#: Holdout metrics reported, of the model and of the online rates.
REPORTED = frozenset(
    f"holdout.{name}"
    for name in (
        "auc",
        "log_loss",
        "ece",
        "ndcg_at_3",
        "snips_value",
        "snips_acceptance",
        "logged_value",
        "logged_acceptance",
        "default_precision",
        "default_coverage",
    )
)


@dataclass(frozen=True)
class Timing:
    seconds: float
    cpu_seconds: float


@dataclass(frozen=True)
class Latency:
    decisions: int
    actions: int
    p50_us: float
    p99_us: float
    defaults_p50_us: float


def main(
    events: Annotated[int, typer.Option(min=1_000, help="Population events, about.")] = 200_000,
    decisions_per_customer: Annotated[int, typer.Option(min=1)] = 4,
    shard_customers: Annotated[int, typer.Option(min=10)] = 5_000,
    days: Annotated[int, typer.Option(min=30)] = 180,
    seed: Annotated[int, typer.Option()] = 7,
    threads: Annotated[int, typer.Option(min=1, help="Fitting threads.")] = 1,
    learning_curve: Annotated[int, typer.Option(min=0, help="Learning curve points.")] = 0,
    score: Annotated[int, typer.Option(min=10, help="Decisions scored for latency.")] = 500,
    report: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="0: replay in this process from the simulated objects; N: write the logs as "
            "an offline store (Parquet) and replay it on a local Dask cluster of N workers.",
        ),
    ] = 0,
    offline: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the offline store (default: a temp dir); one written there by "
            "an earlier run is replayed again without simulating."
        ),
    ] = None,
) -> None:
    """Time simulation, replay and training at `events` events; time scoring a decision."""
    if workers:
        return _main_on_dask(
            events,
            decisions_per_customer,
            shard_customers,
            days,
            seed,
            threads,
            workers,
            offline,
            report,
        )
    config = EngineConfig()
    customers = max(10, round(events * 180 / days / EVENTS_PER_CUSTOMER))
    print(
        f"{customers:,} customers, {customers * decisions_per_customer:,} decisions; "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    timings: dict[str, Timing] = {}
    logged = dict.fromkeys(("population_events", "logged_events", "decisions"), 0)
    frames: list[pd.DataFrame] = []
    for number, size in enumerate(_shard_sizes(customers, shard_customers)):
        with _timed(timings, "simulate"):
            logs = simulate_logs(size, size * decisions_per_customer, seed + number, days=days)
        with _timed(timings, "examples"):
            examples = examples_from_logs(logs.events, logs.decisions, None, config)
            frames.append(_prefixed(examples, number))
        logged["population_events"] += len(logs.population.events)
        logged["logged_events"] += len(logs.events)
        logged["decisions"] += len(logs.decisions)
    print(f"simulated: {logged} in {timings['simulate'].seconds:.0f} s")
    with _timed(timings, "examples"):
        examples = pd.concat(frames, ignore_index=True)
    del frames
    print(f"examples: {len(examples):,} rows in {timings['examples'].seconds:.1f} s")
    train_config = TrainConfig(seed=seed, threads=threads, learning_curve_points=learning_curve)
    with _timed(timings, "train"):
        result = train(examples, config=train_config)
    print(f"trained in {timings['train'].seconds:.1f} s: {result.timings}")
    latency = scoring_latency(result.bundle, logs, config, score)  # the last shard's
    figures = _figures(logged, len(examples), timings, result, latency)
    print(json.dumps(figures, indent=1))
    if report is not None:
        report.write_text(json.dumps(figures, indent=1))


def _main_on_dask(
    events: int,
    decisions_per_customer: int,
    shard_customers: int,
    days: int,
    seed: int,
    threads: int,
    workers: int,
    offline: Path | None,
    report: Path | None,
) -> None:
    """The logs written as an offline store, replayed on a local cluster of `workers`."""
    from training.distributed import connect, distributed_examples

    config = EngineConfig()
    customers = max(10, round(events * 180 / days / EVENTS_PER_CUSTOMER))
    print(
        f"{customers:,} customers, {customers * decisions_per_customer:,} decisions, "
        f"{workers} Dask worker process(es); Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as scratch:
        root = offline or Path(scratch)
        timings: dict[str, Timing] = {}
        logged = dict.fromkeys(("population_events", "logged_events", "decisions"), 0)
        written = root / "offline" / "events"
        if offline is not None and written.is_dir():  # written by an earlier run: reused
            logged["logged_events"] = sum(
                pq.ParquetFile(path).metadata.num_rows for path in written.glob("*/*.parquet")
            )
            print(f"reusing the offline store in {root}")
        for number, size in enumerate(
            [] if logged["logged_events"] else _shard_sizes(customers, shard_customers)
        ):
            with _timed(timings, "simulate"):
                logs = simulate_logs(size, size * decisions_per_customer, seed + number, days=days)
            with _timed(timings, "write_offline"):
                write_offline_shard(root / "offline", logs, number)
            logged["population_events"] += len(logs.population.events)
            logged["logged_events"] += len(logs.events)
            logged["decisions"] += len(logs.decisions)
            del logs
        print(f"simulated: {logged} in {timings.get('simulate', Timing(0, 0)).seconds:.0f} s")
        with connect(workers=workers) as client, _timed(timings, "examples"):
            replay = distributed_examples(client, root / "offline", root / "work", config)
        examples = replay.examples
        print(f"examples: {len(examples):,} rows in {timings['examples'].seconds:.1f} s")
        train_config = TrainConfig(seed=seed, threads=threads)
        with _timed(timings, "train"):
            result = train(examples, config=train_config)
        print(f"trained in {timings['train'].seconds:.1f} s")
    worker_cpu = sum(r.cpu_seconds for r in replay.reports)
    peaks: dict[str, int] = {}
    for partition in replay.reports:
        peaks[partition.worker] = max(peaks.get(partition.worker, 0), partition.peak_rss_bytes)
    figures = {
        **logged,
        "workers": replay.cluster.workers,
        "partitions": replay.partitions,
        "example_rows": len(examples),
        "timings": {name: asdict(timing) for name, timing in timings.items()},
        "replay_phases_seconds": {k: round(v, 2) for k, v in replay.phase_seconds.items()},
        "replay_worker_cpu_seconds": round(worker_cpu, 2),
        "replay_events_per_worker_cpu_second": round(replay.events / worker_cpu),
        "replay_plus_train_seconds": round(
            timings["examples"].seconds + timings["train"].seconds, 1
        ),
        "peak_rss_mb_per_worker": {w: round(b / 2**20) for w, b in sorted(peaks.items())},
        "peak_rss_mb_client": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "train_stages": result.timings,
        "holdout": {
            name: round(value, 4) for name, value in result.metrics.items() if name in REPORTED
        },
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(figures, indent=1))
    if report is not None:
        report.write_text(json.dumps(figures, indent=1))


def write_offline_shard(root: Path, logs: SimulatedLogs, shard: int) -> None:
    """One shard's logs as files of the offline store's tables (ids prefixed by the shard,
    rows numbered `seq` from the shard's number, so shards are one store)."""
    prefix = f"s{shard}-"
    base = shard * 10_000_000
    events = logs.events
    outcomes = [e for e in events if e.type is EventType.OUTCOME]
    tables: dict[str, dict[str, list[Any]]] = {
        "events": {
            "event_id": [prefix + e.event_id for e in events],
            "customer_id": [prefix + e.customer_id for e in events],
            "occurred_at": [e.occurred_at for e in events],
            "type": [e.type.value for e in events],
            "channel": [e.channel.value for e in events],
            "touchpoint": [e.touchpoint for e in events],
            "attributes": [json.dumps(e.attributes, default=str) for e in events],
            "status": ["accepted"] * len(events),
            "seq": list(range(base, base + len(events))),
        },
        "outcomes": {
            "event_id": [prefix + e.event_id for e in outcomes],
            "customer_id": [prefix + e.customer_id for e in outcomes],
            "occurred_at": [e.occurred_at for e in outcomes],
            **{
                name: [_text(e.attributes.get(name)) for e in outcomes]
                for name in ("target", "outcome", "segment")
            },
            "decision_id": [prefix + str(e.attributes["decision_id"]) for e in outcomes],
            "kind": [e.attributes.get("kind", "default") for e in outcomes],
            "value": [_amount(e.attributes.get("value")) for e in outcomes],
            "channel": [e.channel.value for e in outcomes],
            "touchpoint": [e.touchpoint for e in outcomes],
            "attributes": [json.dumps(e.attributes, default=str) for e in outcomes],
            "status": ["accepted"] * len(outcomes),
            "seq": list(range(base, base + len(outcomes))),
        },
        "decisions": {
            "decision_id": [prefix + d.decision_id for d in logs.decisions],
            "customer_id": [prefix + d.customer_id for d in logs.decisions],
            "decided_at": [d.decided_at for d in logs.decisions],
            "body": [
                d.model_copy(update={"decision_id": prefix + d.decision_id}).model_dump_json()
                for d in logs.decisions
            ],
            "seq": list(range(base, base + len(logs.decisions))),
        },
    }
    for name, columns in tables.items():
        schema = SCHEMAS[name]  # type: ignore[index]
        full = {
            field.name: columns.get(field.name, [None] * len(columns["seq"])) for field in schema
        }
        table = with_schema_version(pa.Table.from_pydict(full, schema=schema))
        folder = root / name / f"date=shard{shard:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table, folder / f"part-{base:012d}-{base + len(columns['seq']):012d}.parquet"
        )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _amount(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def scoring_latency(
    bundle: ModelBundle, logs: SimulatedLogs, config: EngineConfig, decisions: int
) -> Latency:
    """Time the bundle answering `decisions` logged decisions, all catalogue actions each."""
    actions = [action.id for action in load_catalogue(RETAIL_BANK_CATALOGUE).actions]
    by_customer: dict[str, list[Decision]] = {}
    for decision in logs.decisions:
        by_customer.setdefault(decision.customer_id, []).append(decision)
    events: dict[str, list[Event]] = {}
    for event in sorted(logs.events, key=lambda e: (e.occurred_at, e.event_id)):
        events.setdefault(event.customer_id, []).append(event)
    action_times, default_times = [], []
    for customer_id, customer_decisions in by_customer.items():
        history = events.get(customer_id, [])
        for decision, facts in point_in_time_facts(history, customer_decisions, config):
            request = DecisionRequest(
                customer_id=customer_id,
                touchpoint=decision.touchpoint,
                channel=Channel(decision.touchpoint_channel),
                context=decision.context,
            )
            segment = decision.segment or "mass"
            began = time.perf_counter()
            bundle.action_posteriors(actions, facts=facts, segment=segment, request=request)
            action_times.append(time.perf_counter() - began)
            habits = _habits_of(decision)
            if habits:
                began = time.perf_counter()
                bundle.default_acceptance(habits, request=request)
                default_times.append(time.perf_counter() - began)
            if len(action_times) >= decisions:
                return _latency(action_times, default_times, len(actions))
    return _latency(action_times, default_times, len(actions))


def _habits_of(decision: Decision) -> list[UsualRequest]:
    """The habits behind the decision's logged defaults, as `UsualRequest`s."""
    return [
        UsualRequest(
            request=default.request,
            channel=default.channel,
            values=default.values,
            signature=default.signature,
            matches=default.matches,
            window=default.window,
            confidence=default.confidence,
        )
        for default in decision.defaults
    ]


def _latency(action_times: list[float], default_times: list[float], actions: int) -> Latency:
    micro = np.array(action_times) * 1e6
    return Latency(
        decisions=len(action_times),
        actions=actions,
        p50_us=round(float(np.percentile(micro, 50)), 1),
        p99_us=round(float(np.percentile(micro, 99)), 1),
        defaults_p50_us=(
            round(float(np.percentile(np.array(default_times) * 1e6, 50)), 1)
            if default_times
            else float("nan")
        ),
    )


def _shard_sizes(customers: int, shard_size: int) -> list[int]:
    """Customers per shard: `shard_size` each, the rest in the last."""
    full, rest = divmod(customers, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def _prefixed(examples: pd.DataFrame, shard: int) -> pd.DataFrame:
    """Ids unique across shards (each shard numbers its customers and decisions from 1)."""
    for column in ("customer_id", "decision_id"):
        examples[column] = f"s{shard}-" + examples[column].astype(str)
    return examples


@contextmanager
def _timed(timings: dict[str, Timing], name: str) -> Iterator[None]:
    """Add the wall clock and CPU seconds of the block to `timings[name]`."""
    began, cpu_began = time.perf_counter(), time.process_time()
    yield
    before = timings.get(name, Timing(0.0, 0.0))
    timings[name] = Timing(
        seconds=round(before.seconds + time.perf_counter() - began, 2),
        cpu_seconds=round(before.cpu_seconds + time.process_time() - cpu_began, 2),
    )


def _figures(
    logged: dict[str, int],
    rows: int,
    timings: dict[str, Timing],
    result: TrainResult,
    latency: Latency,
) -> dict[str, Any]:
    return {
        **logged,
        "example_rows": rows,
        "timings": {name: asdict(timing) for name, timing in timings.items()},
        "train_stages": result.timings,
        "propensity_trees": result.bundle.propensity.trees.trees,
        "holdout": {
            name: round(value, 4) for name, value in result.metrics.items() if name in REPORTED
        },
        "online_rates": {
            name: round(value, 4)
            for name, value in result.baselines["online_rates"].items()
            if name in REPORTED
        },
        "scoring": asdict(latency),
        "load_average": round(os.getloadavg()[0], 1),
    }


if __name__ == "__main__":
    typer.run(main)
