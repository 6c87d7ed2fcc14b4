"""Replay throughput: how fast training replays the online fold over the event log.

    .venv/bin/python -m bench.replay_throughput [--customers 5000] [--days 180] [--seed 7]
        [--decisions 4] [--repeat 3]

Set-up: the synthetic population `PopulationSpec(customers, seed, start=2026-01-01 UTC, days)`
(about 69 events per customer over 180 days), held in memory as `Event` objects, each
customer's events sorted by (occurred_at, event_id); `--decisions` decisions per customer at
seeded random times over the period, at an ATM. Every phase runs in this one process (one
core), over the same events, `--repeat` times; the fastest run is reported (the others were
slowed by other work on the machine, not by the code). Each phase is timed twice: wall-clock
seconds, and the CPU seconds of this process, which other processes sharing the cores slow
down much less (events per CPU second is the per-core throughput).

Phases, each in events per second of the events it goes over:

* baseline: a trivial loop over the same events that updates a dict per customer (counts by
  channel, latest time): what any per-event Python code costs at least;
* fold: `engine.fold.apply_in_place` per event into a new profile per customer (`known_new`,
  as the stores and replay fold), i.e. replay without reading features;
* point in time: `feature_store.offline.replay.point_in_time_facts`, the fold plus the facts of the
  profile at each decision (what training examples are made of);
* decode only, validated (before): `events_from_frame`, one pydantic-validated `Event` per row,
  how replay decoded the offline table before columnar replay;
* decode only, columnar (now): `feature_store.offline.columnar.event_histories` over the same
  rows as an Arrow table (sorting, de-duplication and `Event`s built from the columns);
* from frames: `feature_store.offline.replay.training_examples` from pandas frames shaped like the
  offline tables, i.e. the columnar decode, the replay, the facts flattened into feature
  columns and the frame of examples (the decisions have no items, so it holds no rows).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.fold import apply_in_place, new_profile
from feature_store.offline.columnar import event_histories, events_table
from feature_store.offline.replay import events_from_frame, point_in_time_facts, training_examples
from training.simulation.population import PopulationSpec, iter_customer_histories

START = datetime(2026, 1, 1, tzinfo=UTC)

Histories = list[tuple[list[Event], list[Decision]]]


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    cpu_seconds: float
    events: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def events_per_cpu_second(self) -> float:
        return self.events / self.cpu_seconds


def main(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 5000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 180,
    seed: Annotated[int, typer.Option(help="Seed of the population and decisions.")] = 7,
    decisions: Annotated[int, typer.Option(help="Decisions per customer.")] = 4,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each phase; best reported.")] = 3,
) -> None:
    """Measure replay throughput against a trivial per-event loop (see the module docstring)."""
    config = EngineConfig()
    began = time.perf_counter()
    spec = PopulationSpec(customers=customers, seed=seed, start=START, days=days)
    histories = population(spec, decisions)
    events = sum(len(customer_events) for customer_events, _ in histories)
    print(
        f"{customers:,} customers, {events:,} events, {customers * decisions:,} decisions "
        f"(generated in {time.perf_counter() - began:.1f} s); Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    frames = offline_frames(histories)
    phases = [
        best_of(repeat, "baseline: dict update per event", events, lambda: baseline(histories)),
        best_of(repeat, "fold (apply_in_place)", events, lambda: fold(histories, config)),
        best_of(repeat, "point in time (fold + facts)", events, lambda: facts(histories, config)),
        best_of(
            repeat,
            "decode only: validated Events (before)",
            events,
            lambda: decode_validated(frames),
        ),
        best_of(repeat, "decode only: columnar (now)", events, lambda: decode_columnar(frames)),
        best_of(
            repeat, "from frames (decode + replay)", events, lambda: from_frames(frames, config)
        ),
    ]
    print(
        "\n| phase | seconds | events/s | CPU seconds | events/CPU s "
        "| time per event vs baseline (CPU) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for phase in phases:
        ratio = phases[0].events_per_cpu_second / phase.events_per_cpu_second
        print(
            f"| {phase.name} | {phase.seconds:.2f} | {phase.events_per_second:,.0f} | "
            f"{phase.cpu_seconds:.2f} | {phase.events_per_cpu_second:,.0f} | {ratio:,.1f}x |"
        )


def population(spec: PopulationSpec, decisions: int) -> Histories:
    """Each customer's events in time order, with decisions at seeded random times."""
    rng = np.random.default_rng(spec.seed)
    period = spec.days * 86_400
    histories: Histories = []
    for history in iter_customer_histories(spec):
        customer_id = history.truth.customer_id
        offsets = np.sort(rng.integers(0, period, size=decisions))
        customer_decisions = [
            Decision(
                decision_id=f"dec-{customer_id}-{n}",
                customer_id=customer_id,
                touchpoint="atm-0042",
                touchpoint_channel="atm",
                decided_at=spec.start + timedelta(seconds=int(offset)),
                known_customer=True,
                policy_version="bench",
            )
            for n, offset in enumerate(offsets)
        ]
        events = sorted(history.events, key=lambda e: (e.occurred_at, e.event_id))
        histories.append((events, customer_decisions))
    return histories


def best_of(repeat: int, name: str, events: int, run: Callable[[], object]) -> Phase:
    times, cpu_times = [], []
    for _ in range(repeat):
        began, cpu_began = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - began)
        cpu_times.append(time.process_time() - cpu_began)
    return Phase(name, min(times), min(cpu_times), events)


def baseline(histories: Histories) -> int:
    """Per event: count the channel and keep the latest time, in a dict per customer."""
    touched = 0
    for events, _ in histories:
        channels: dict[str, int] = {}
        latest: datetime | None = None
        for event in events:
            channels[event.channel] = channels.get(event.channel, 0) + 1
            if latest is None or event.occurred_at > latest:
                latest = event.occurred_at
        touched += len(channels)
    return touched


def fold(histories: Histories, config: EngineConfig) -> int:
    folded = 0
    for events, _ in histories:
        if not events:
            continue
        profile = new_profile(events[0].customer_id)
        for event in events:
            apply_in_place(profile, event, config, known_new=True)
        folded += profile.event_count
    return folded


def facts(histories: Histories, config: EngineConfig) -> int:
    read = 0
    for events, customer_decisions in histories:
        for _ in point_in_time_facts(events, customer_decisions, config):
            read += 1
    return read


@dataclass(frozen=True)
class Frames:
    events: pd.DataFrame
    decisions: pd.DataFrame


def offline_frames(histories: Histories) -> Frames:
    """The population as the offline store's tables read it (the columns replay uses)."""
    events = [event for customer_events, _ in histories for event in customer_events]
    decisions = [decision for _, customer_decisions in histories for decision in customer_decisions]
    return Frames(
        events=pd.DataFrame(
            {
                "event_id": [e.event_id for e in events],
                "customer_id": [e.customer_id for e in events],
                "occurred_at": pd.to_datetime([e.occurred_at for e in events], utc=True),
                "type": [e.type.value for e in events],
                "channel": [e.channel.value for e in events],
                "touchpoint": [e.touchpoint for e in events],
                "attributes": [json.dumps(e.attributes, default=str) for e in events],
            }
        ),
        decisions=pd.DataFrame(
            {
                "customer_id": [d.customer_id for d in decisions],
                "body": [d.model_dump_json() for d in decisions],
            }
        ),
    )


def decode_validated(frames: Frames) -> int:
    """What replay did before: an `Event` validated per row."""
    return sum(1 for _ in events_from_frame(frames.events))


def decode_columnar(frames: Frames) -> int:
    """What replay does now: `feature_store.offline.columnar`, from the Arrow columns."""
    table = events_table(frames.events)
    return sum(len(history) for _, history in event_histories(table))


def from_frames(frames: Frames, config: EngineConfig) -> int:
    return len(training_examples(frames.events, frames.decisions, None, config))


if __name__ == "__main__":
    typer.run(main)
