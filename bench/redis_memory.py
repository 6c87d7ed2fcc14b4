"""Memory per customer of the Redis store, measured on the demo population.

    .venv/bin/python -m bench.redis_memory [--customers 1000] [--seed 7] [--days 180]
        [--decisions 1] [--heavy-events 10000] [--out var/bench/redis_memory.json]

Set-up: a fresh `redis-server` (from PATH) on a free loopback port, in a temporary folder,
without persistence. The synthetic population `PopulationSpec(customers, seed, start=2026-01-01
UTC, days)` is loaded through the Redis store (default `RedisStoreConfig`) with
`api.cli.common.load_events`, as `rapport demo` loads it; then `--decisions` decisions per customer,
at an ATM an hour apart, are taken and logged as `POST /v1/decisions` does. Every key is then
found with SCAN, measured with `MEMORY USAGE key SAMPLES 0` (exact: every element is counted)
and summed by kind of key. The same spec gives the same events, so the same Redis version gives
the same figures.

`used_memory` (INFO) before and after is printed as a cross-check: it also holds the
allocator's overhead and fragmentation, which MEMORY USAGE does not see.

Then one more customer gets `--heavy-events` events (ATM withdrawals spread over the same
days) and one decision, and what the store grew by is reported by kind of key: the cost of one
long history, which a bounded layout keeps bounded.

The population is loaded at once, so every event id is still inside the dedup window (7 days
after its acceptance); in a steady state the window holds only the ids of the last 7 days.
The bytes per element are printed so the figures can be scaled to other volumes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import redis
import typer

from api.cli.common import load_events
from api.serving import decide_for
from engine.config import EngineConfig
from engine.decision import DecisionRequest
from engine.events import Channel, Event, EventType
from feature_store.factory import open_store
from feature_store.keys import DEFAULT_PREFIX
from feature_store.offline.export import OfflineStore
from training.simulation.population import PopulationSpec, generate_population

HOST = "127.0.0.1"  # loopback only
START = datetime(2026, 1, 1, tzinfo=UTC)
HEAVY_CUSTOMER = "cust-heavy"
STARTUP_SECONDS = 20.0
STOP_SECONDS = 10.0

#: A customer's keys: `<prefix>:{<customer>}:<suffix>` (see feature_store/keys.py).
_CUSTOMER_KEY = re.compile(rf"^{re.escape(DEFAULT_PREFIX)}:\{{[^}}]*\}}:(?P<suffix>[^:]+)$")
_CUSTOMER_KINDS = {
    "p": "profile",
    "e": "event log",
    "d": "dedup window",
    "x": "decision index",
    "i": "identifier set",
    "m": "merged customers",
    "g": "merge intents",
    "a": "alias",
    "l": "lease",
    "le": "event log index",
    "ld": "decision log index",
}
_OTHER_KINDS = {
    f"{DEFAULT_PREFIX}:dec:": "decision log",
    f"{DEFAULT_PREFIX}:log:": "global log streams",
    f"{DEFAULT_PREFIX}:order:": "global log order",
    f"{DEFAULT_PREFIX}:pop": "population counters",
    f"{DEFAULT_PREFIX}:id:": "identifiers",
    f"{DEFAULT_PREFIX}:erased:": "erasure records",
    f"{DEFAULT_PREFIX}:auth:": "API keys",
}


@dataclass
class KindTotal:
    """What the keys of one kind hold: how many keys, elements (list or zset entries), bytes."""

    keys: int = 0
    elements: int = 0
    bytes: int = 0


def key_kind(key: str) -> str:
    """The kind of a key of the store's layout, e.g. 'profile' for `rp:{cust-42}:p`."""
    match = _CUSTOMER_KEY.match(key)
    if match:
        suffix = match["suffix"]
        if suffix.startswith("o") and suffix[1:] in _CUSTOMER_KINDS:
            return "merge hand-over"  # a merged customer's state, until the survivor takes it
        return _CUSTOMER_KINDS.get(suffix, f"customer :{suffix}")
    for prefix, kind in _OTHER_KINDS.items():
        if key.startswith(prefix):
            return kind
    return "other"


def measure(client: redis.Redis) -> dict[str, KindTotal]:
    """MEMORY USAGE (exact) of every key, summed by kind, with the entries of lists, sorted sets,
    hashes and streams as elements (1 for a string)."""
    totals: dict[str, KindTotal] = defaultdict(KindTotal)
    for raw_key in client.scan_iter(count=1000):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        total = totals[key_kind(key)]
        total.keys += 1
        total.bytes += int(client.memory_usage(key, samples=0) or 0)
        kind = client.type(key)
        if kind in (b"list", "list"):
            total.elements += int(client.llen(key))
        elif kind in (b"zset", "zset"):
            total.elements += int(client.zcard(key))
        elif kind in (b"hash", "hash"):
            total.elements += int(client.hlen(key))
        elif kind in (b"stream", "stream"):
            total.elements += int(client.xlen(key))
        else:
            total.elements += 1
    return dict(totals)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def markdown_table(totals: dict[str, KindTotal], customers: int) -> str:
    """Bytes per customer by kind of key, with each kind's bytes per element."""
    rows = [
        "| key kind | keys | elements | bytes per customer | bytes per element |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, total in sorted(totals.items(), key=lambda item: -item[1].bytes):
        rows.append(
            f"| {kind} | {total.keys:,} | {total.elements:,} | "
            f"{total.bytes / customers:,.0f} | {total.bytes / max(1, total.elements):,.0f} |"
        )
    everything = sum(total.bytes for total in totals.values())
    rows.append(f"| **all** | | | **{everything / customers:,.0f}** | |")
    return "\n".join(rows)


@dataclass(frozen=True, slots=True)
class Measurement:
    """The store's memory after loading a population: by kind of key, and INFO's used_memory."""

    redis_version: str
    events: int
    load_seconds: float
    totals: dict[str, KindTotal]
    #: The same once the logs were exported twice (the store trims what the offline store has).
    exported_totals: dict[str, KindTotal]
    used_memory_empty: int  # bytes
    used_memory_loaded: int  # bytes
    heavy_events: int = 0
    #: What the store grew by, by kind of key, for one customer with `heavy_events` events.
    heavy_totals: dict[str, KindTotal] | None = None
    #: The same once that customer's logs were exported.
    heavy_exported: dict[str, KindTotal] | None = None


def heavy_history(spec: PopulationSpec, count: int) -> list[Event]:
    """`count` ATM withdrawals of one customer, evenly over the spec's days."""
    step = timedelta(days=spec.days) / max(1, count)
    return [
        Event(
            event_id=f"heavy-{number}",
            customer_id=HEAVY_CUSTOMER,
            touchpoint="atm-0042",
            channel=Channel.ATM,
            type=EventType.REQUEST,
            occurred_at=spec.start + number * step,
            attributes={"request": "cash_withdrawal", "amount": 50, "currency": "EUR"},
        )
        for number in range(count)
    ]


def growth(before: dict[str, KindTotal], after: dict[str, KindTotal]) -> dict[str, KindTotal]:
    """What each kind of key gained from `before` to `after` (unchanged kinds left out)."""
    grown = {}
    for kind, total in after.items():
        old = before.get(kind, KindTotal())
        delta = KindTotal(
            total.keys - old.keys, total.elements - old.elements, total.bytes - old.bytes
        )
        if delta != KindTotal():
            grown[kind] = delta
    return grown


def measure_population(
    spec: PopulationSpec, decisions_per_customer: int = 1, heavy_events: int = 0
) -> Measurement:
    """Load `spec`'s population and decisions (at an ATM) into a fresh redis-server; then, with
    `heavy_events`, one customer with that many events and a decision."""
    population = generate_population(spec)
    with (
        tempfile.TemporaryDirectory(prefix="rapport-redis-memory-") as folder,
        redis_server(Path(folder)) as port,
        closing(redis.Redis(HOST, port)) as client,
    ):
        empty = used_memory(client)
        started = time.perf_counter()
        with closing(open_store(f"redis://{HOST}:{port}/0", EngineConfig())) as store:
            events = load_events(store, population.events)
            end = spec.start + timedelta(days=spec.days)
            for customer_id in population.truth:
                question = DecisionRequest(
                    customer_id=customer_id, touchpoint="atm-0042", channel=Channel.ATM
                )
                for number in range(decisions_per_customer):
                    decided_at = end - timedelta(hours=decisions_per_customer - number)
                    if decide_for(store, question, at=decided_at).degraded:
                        raise SystemExit("the Redis store did not answer a decision")
            load_seconds = time.perf_counter() - started
            totals = measure(client)
            loaded = used_memory(client)
            # The store runs with its logs exported: two runs, so the second acknowledges what
            # the first saved and the store trims its online logs (one copy of each event).
            offline = OfflineStore(Path(folder) / "offline")
            offline.export(store)
            offline.export(store)
            exported_totals = measure(client)
            heavy_totals = heavy_exported = None
            if heavy_events:
                history = heavy_history(spec, heavy_events)
                for first in range(0, len(history), 1000):
                    store.apply_events(history[first : first + 1000])
                question = DecisionRequest(
                    customer_id=HEAVY_CUSTOMER, touchpoint="atm-0042", channel=Channel.ATM
                )
                if decide_for(store, question, at=end).degraded:
                    raise SystemExit("the Redis store did not answer a decision")
                heavy_totals = growth(exported_totals, measure(client))
                offline.export(store)
                offline.export(store)
                heavy_exported = growth(exported_totals, measure(client))
        return Measurement(
            redis_version=str(client.info("server")["redis_version"]),
            events=events,
            load_seconds=load_seconds,
            totals=totals,
            exported_totals=exported_totals,
            heavy_exported=heavy_exported,
            used_memory_empty=empty,
            used_memory_loaded=loaded,
            heavy_events=heavy_events,
            heavy_totals=heavy_totals,
        )


def main(
    customers: Annotated[int, typer.Option(min=1, help="Synthetic customers.")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the population.")] = 7,
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 180,
    decisions: Annotated[int, typer.Option(min=0, help="Decisions per customer.")] = 1,
    heavy_events: Annotated[
        int, typer.Option(min=0, help="Events of one more customer, measured apart (0: none).")
    ] = 10_000,
    out: Annotated[Path | None, typer.Option(help="Where to write the JSON results.")] = None,
) -> None:
    """Load the demo population into a fresh redis-server and print the memory per customer."""
    spec = PopulationSpec(customers=customers, seed=seed, start=START, days=days)
    result = measure_population(spec, decisions, heavy_events)
    print(
        f"Redis {result.redis_version}; {customers:,} customers (seed {seed}, {days} days from "
        f"{START:%Y-%m-%d}): {result.events:,} events ({result.events / customers:.1f} per "
        f"customer) and {decisions * customers:,} decisions ({decisions} per customer) loaded "
        f"in {result.load_seconds:.1f} s.\n"
    )
    print(markdown_table(result.totals, customers))
    print("\nAfter the logs were exported (two `rapport export` runs: the store trims what the")
    print("offline store has saved, so each event is held once, offline):\n")
    print(markdown_table(result.exported_totals, customers))
    grown = result.used_memory_loaded - result.used_memory_empty
    print(
        f"\nused_memory grew by {grown / customers:,.0f} bytes per customer "
        f"({result.used_memory_empty:,} -> {result.used_memory_loaded:,} bytes): MEMORY USAGE "
        "plus the allocator's overhead."
    )
    if result.heavy_totals is not None:
        print(f"\nOne customer with {heavy_events:,} events and one decision:\n")
        print(markdown_table(result.heavy_totals, 1))
        if result.heavy_exported is not None:
            print("\nThe same customer once its logs were exported:\n")
            print(markdown_table(result.heavy_exported, 1))
    if out is not None:
        write_json(result, spec, decisions, out)


def write_json(result: Measurement, spec: PopulationSpec, decisions: int, out: Path) -> None:
    def by_kind(totals: dict[str, KindTotal], customers: int) -> dict[str, dict[str, float]]:
        return {
            kind: {**asdict(total), "bytes_per_customer": total.bytes / customers}
            for kind, total in totals.items()
        }

    report = {
        "benchmark": "redis_memory",
        "settings": {
            "customers": spec.customers,
            "seed": spec.seed,
            "days": spec.days,
            "decisions_per_customer": decisions,
            "heavy_events": result.heavy_events,
        },
        "redis_version": result.redis_version,
        "events": result.events,
        "bytes_per_customer": sum(t.bytes for t in result.totals.values()) / spec.customers,
        "by_kind": by_kind(result.totals, spec.customers),
        "exported_bytes_per_customer": sum(t.bytes for t in result.exported_totals.values())
        / spec.customers,
        "exported_by_kind": by_kind(result.exported_totals, spec.customers),
        "used_memory_growth_per_customer": (result.used_memory_loaded - result.used_memory_empty)
        / spec.customers,
        "heavy_customer": None
        if result.heavy_totals is None
        else {
            "events": result.heavy_events,
            "bytes": sum(t.bytes for t in result.heavy_totals.values()),
            "by_kind": by_kind(result.heavy_totals, 1),
            "exported_bytes": None
            if result.heavy_exported is None
            else sum(t.bytes for t in result.heavy_exported.values()),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {out}")


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[int]:
    """A redis-server on a free loopback port in `folder`, without persistence; its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (Debian: apt-get install redis-server)")
    port = _free_port()
    command = [
        binary,
        "--port", str(port),
        "--bind", HOST,
        "--dir", str(folder),
        "--save", "",
        "--appendonly", "no",
        "--logfile", "redis.log",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        _wait_until_it_answers(process, port, folder)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_it_answers(process: subprocess.Popen[bytes], port: int, folder: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with closing(redis.Redis(HOST, port, socket_timeout=1)) as client:
        while True:
            if process.poll() is not None:
                log = folder / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                raise SystemExit(f"redis-server exited on start:\n{tail}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not answer")
            time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    typer.run(main)
