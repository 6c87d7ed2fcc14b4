"""`POST /v1/decisions` beside the floor: capacity, latency at a given load, and overload.

    .venv/bin/python -m bench.decisions [--phases closed,open] [--stores redis,sqlite]
        [--connections 8] [--duration 10] [--rounds 3] [--customers 500] [--seed 7]
        [--open-duration 10] [--overload-duration 20] [--overload-factor 3]
        [--out var/bench/decisions.json]

Set-up: a redis-server on a free loopback port and a SQLite file in a temporary folder; the
synthetic population (`--customers`, 180 days) loaded into each store; an API key (scope
`decisions`) in each. Servers, each its own uvicorn process with one worker (uvloop, httptools,
as `rapport serve` runs): the floor (`bench.floor_app`: async FastAPI, pydantic request, one
Redis GET of 1 kB per customer, a ~3 kB JSON answer) and Rapport on each store. Every server
gets the same requests (customers in turn, at ATMs, the web and the app) with the key.

Phases (`--phases`, any of):

* closed: `--connections` connections each send the next request when the answer to the
  previous one arrives, `--duration` seconds per server, in `--rounds` rounds; each round runs
  the floor, then Rapport on each store, so the machine's noise hits every server alike. It
  reports answers per second (the capacity), the ratio to the floor in the same round (the
  median over rounds), p50/p99, and the server's CPU per request (utime + stime of its process);
* open: requests at fixed times (`bench.loadgen`, latency from each due time) at 25%, 50% and
  90% of Rapport's measured closed-loop capacity, the floor at the same rate just before;
* overload: requests at `--overload-factor` x Rapport's capacity for `--overload-duration`
  seconds. Goodput is the 2xx answers that came within Rapport's request deadline (from the
  request being written), per second; late answers are counted too;
* stack: the floor under asyncio + h11 against uvloop + httptools, closed loop, rounds
  alternated (the choice `rapport serve` makes).

The load generator runs on the same machine, on uvloop over raw sockets; its CPU is reported.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.keys import create_key
from bench.closed_loop import ClosedLoopRun, run_closed_loop
from bench.floor_app import REDIS_URL_VARIABLE, seed_values
from bench.harness import (
    Server,
    bench_stores,
    check_post,
    decision_bodies,
    load,
    machine,
    machine_busy_seconds,
    print_table,
    run_async,
    serve,
    write_report,
)
from bench.loadgen import run_open_loop, summarise
from feature_store.credentials import Scope

DECISIONS = "/v1/decisions"
PHASES = ("closed", "open", "overload", "stack")
OPEN_FRACTIONS = (0.25, 0.5, 0.9)
OPEN_TIMEOUT_SECONDS = 5.0
FLOOR = "floor"


def main(
    phases: Annotated[str, typer.Option(help="Comma-separated: " + ",".join(PHASES))] = (
        "closed,open"
    ),
    stores: Annotated[str, typer.Option(help="Rapport's stores: redis,sqlite")] = "redis,sqlite",
    connections: Annotated[int, typer.Option(min=1, help="Closed-loop connections.")] = 8,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds per closed-loop run.")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="Closed-loop rounds.")] = 3,
    warmup: Annotated[float, typer.Option(min=0, help="Closed-loop warm-up seconds.")] = 2,
    customers: Annotated[int, typer.Option(min=1, help="Synthetic customers.")] = 500,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the population.")] = 7,
    open_duration: Annotated[float, typer.Option(min=0.1, help="Seconds per open run.")] = 10,
    open_warmup: Annotated[float, typer.Option(min=0, help="Seconds discarded first.")] = 1,
    overload_duration: Annotated[float, typer.Option(min=0.1, help="Overload seconds.")] = 20,
    overload_factor: Annotated[float, typer.Option(min=1, help="x capacity offered.")] = 3,
    deadline: Annotated[float, typer.Option(help="Rapport's request deadline, s.")] = 1.0,
    guard: Annotated[bool, typer.Option(help="Rapport's overload guard on.")] = True,
    max_in_flight: Annotated[
        int | None, typer.Option(min=1, help="Rapport's RAPPORT_MAX_IN_FLIGHT (its default).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path(
        "var/bench/decisions.json"
    ),
) -> None:
    """Measure Rapport's decisions beside the floor; print tables and write JSON."""
    chosen = [phase.strip() for phase in phases.split(",") if phase.strip()]
    if unknown := set(chosen) - set(PHASES):
        raise typer.BadParameter(f"unknown phases {sorted(unknown)}", param_hint="--phases")
    chosen_stores = [store.strip() for store in stores.split(",") if store.strip()]
    if set(chosen_stores) - {"redis", "sqlite"}:
        raise typer.BadParameter("redis and/or sqlite", param_hint="--stores")
    settings = {
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "warmup_s": warmup,
        "customers": customers,
        "seed": seed,
        "open_duration_s": open_duration,
        "open_warmup_s": open_warmup,
        "overload_duration_s": overload_duration,
        "overload_factor": overload_factor,
        "deadline_s": deadline,
        "guard": guard,
        "max_in_flight": max_in_flight,
    }
    report: dict[str, Any] = {
        "benchmark": "decisions",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {**settings, "phases": chosen, "stores": chosen_stores},
        "machine": machine(),
    }
    bench = DecisionsBench(
        chosen_stores,
        customers=customers,
        seed=seed,
        deadline=deadline,
        guard=guard,
        connections=connections,
        max_in_flight=max_in_flight,
    )
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as folder, ExitStack() as stack:
        bench.start(stack, Path(folder))
        report["events_loaded"] = bench.events_loaded
        if chosen_stores and ({"closed", "open", "overload"} & set(chosen)):
            bench.warm_up(warmup)
            report["closed"] = bench.closed(duration=duration, rounds=rounds)
            print_closed(report["closed"])
        if "open" in chosen and chosen_stores:
            report["open"] = bench.open(duration=open_duration, warmup=open_warmup)
            print_open(report["open"])
        if "overload" in chosen and chosen_stores:
            report["overload"] = bench.overload(factor=overload_factor, duration=overload_duration)
            print_overload(report["overload"])
        if "stack" in chosen:
            report["stack"] = bench.stack(stack, duration=duration, rounds=rounds, warmup=warmup)
            print_closed(report["stack"])
    write_report(report, out)


class DecisionsBench:
    """The servers of a run and the requests each gets."""

    def __init__(
        self,
        stores: list[str],
        *,
        customers: int,
        seed: int,
        deadline: float,
        guard: bool,
        connections: int,
        max_in_flight: int | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.stores, self.customers, self.seed = stores, customers, seed
        self.deadline, self.guard, self.connections = deadline, guard, connections
        self.servers: dict[str, Server] = {}
        self.requests: dict[str, list[bytes]] = {}
        self.events_loaded: dict[str, int] = {}
        self.capacity: dict[str, float] = {}

    def start(self, stack: ExitStack, folder: Path) -> None:
        stores = stack.enter_context(bench_stores(stack, folder))
        self._folder, self._redis_url = folder, stores.redis_url
        customer_ids: list[str] = []
        keys = {}
        for store in self.stores:
            customer_ids = load(stores, store, customers=self.customers, seed=self.seed)
            keys[store] = create_key(stores.url(store), "bench", [Scope.DECISIONS])
        self.events_loaded = dict(stores.loaded)
        if not customer_ids:  # the stack phase alone: the floor needs customers only
            customer_ids = [f"cust-{n:05d}" for n in range(self.customers)]
        seed_values(stores.redis_url, customer_ids)
        self._bodies = decision_bodies(customer_ids, count=3 * len(customer_ids))
        self._add(stack, FLOOR, ["bench.floor_app:app"], {REDIS_URL_VARIABLE: stores.redis_url})
        for store in self.stores:
            env = {
                "RAPPORT_STORE": stores.url(store),
                "RAPPORT_LOG_LEVEL": "WARNING",
                "RAPPORT_REQUEST_DEADLINE_SECONDS": str(self.deadline),
            }
            if self.max_in_flight is not None:
                env["RAPPORT_MAX_IN_FLIGHT"] = str(self.max_in_flight)
            if not self.guard:
                env |= {"RAPPORT_MAX_IN_FLIGHT": "1000000", "RAPPORT_QUEUE_WAIT_SECONDS": "3600"}
                env["RAPPORT_REQUEST_DEADLINE_SECONDS"] = "3600"
            self._add(
                stack,
                f"rapport-{store}",
                ["api.app:create_app", "--factory"],
                env,
                {"Authorization": f"Bearer {keys[store]}"},
            )

    def _add(
        self,
        stack: ExitStack,
        name: str,
        app: list[str],
        env: dict[str, str],
        headers: dict[str, str] | None = None,
        **server_options: Any,
    ) -> None:
        server = stack.enter_context(serve(name, app, env, self._folder, **server_options))
        check_post(server, DECISIONS, self._bodies[0], headers or {})
        self.servers[name] = server
        self.requests[name] = [
            server.target.post_json(DECISIONS, body, headers) for body in self._bodies
        ]

    def warm_up(self, seconds: float) -> None:
        if seconds > 0:
            for name in self.servers:
                self._closed_run(name, seconds)

    def _closed_run(self, name: str, duration: float) -> dict[str, Any]:
        server = self.servers[name]
        cpu, busy = server.cpu_seconds(), machine_busy_seconds()
        run: ClosedLoopRun = run_async(
            run_closed_loop(
                server.target,
                self.requests[name],
                connections=self.connections,
                duration_s=duration,
            )
        )
        server_cpu = server.cpu_seconds() - cpu
        machine_cpu = machine_busy_seconds() - busy
        answered = max(1, run.answered)
        return {
            **asdict(run),
            "server_cpu_ms_per_request": 1000 * server_cpu / answered,
            "server_cpu_percent": 100 * server_cpu / run.duration_s,
            "generator_cpu_ms_per_request": 1000 * run.generator_cpu_s / answered,
            "generator_cpu_percent": 100 * run.generator_cpu_s / run.duration_s,
            "others_cpu_percent": 100
            * max(0.0, machine_cpu - server_cpu - run.generator_cpu_s)
            / run.duration_s,
        }

    def closed(self, *, duration: float, rounds: int, names: list[str] | None = None) -> Any:
        names = names or list(self.servers)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for number in range(rounds):
            for name in names:
                print(f"Closed loop, round {number + 1}/{rounds}: {name}", flush=True)
                runs[name].append(self._closed_run(name, duration))
        floor = names[0]
        summary = {}
        for name in names:
            rates = [run["rate"] for run in runs[name]]
            ratios = [
                run["rate"] / base["rate"] if base["rate"] else math.nan
                for run, base in zip(runs[name], runs[floor], strict=True)
            ]
            cpu_ratios = [  # the floor's CPU per request over this one's: steadier than rates
                base["server_cpu_ms_per_request"] / run["server_cpu_ms_per_request"]
                if run["server_cpu_ms_per_request"]
                else math.nan
                for run, base in zip(runs[name], runs[floor], strict=True)
            ]
            summary[name] = {
                "rate": statistics.median(rates),
                "ratio_to_floor": statistics.median(ratios),
                "cpu_ratio_to_floor": statistics.median(cpu_ratios),
                "p50_ms": statistics.median(run["latency_ms"]["p50"] for run in runs[name]),
                "p99_ms": statistics.median(run["latency_ms"]["p99"] for run in runs[name]),
                "server_cpu_ms_per_request": statistics.median(
                    run["server_cpu_ms_per_request"] for run in runs[name]
                ),
                "generator_cpu_ms_per_request": statistics.median(
                    run["generator_cpu_ms_per_request"] for run in runs[name]
                ),
                "generator_cpu_percent": statistics.median(
                    run["generator_cpu_percent"] for run in runs[name]
                ),
                "others_cpu_percent": statistics.median(
                    run["others_cpu_percent"] for run in runs[name]
                ),
                "errors": sum(
                    count
                    for run in runs[name]
                    for status, count in run["by_status"].items()
                    if not 200 <= status < 300
                ),
            }
            self.capacity[name] = summary[name]["rate"]
        return {"floor": floor, "summary": summary, "rounds": runs}

    def open(self, *, duration: float, warmup: float) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name in self.servers:
            if name == FLOOR:
                continue
            results[name] = []
            for fraction in OPEN_FRACTIONS:
                rate = max(1.0, fraction * self.capacity[name])
                row: dict[str, Any] = {"fraction": fraction, "rate": rate}
                for server in (FLOOR, name):
                    print(f"Open loop at {rate:.0f}/s: {server}", flush=True)
                    row[server] = self._open_run(server, rate, duration, warmup)
                results[name].append(row)
        return results

    def _open_run(self, name: str, rate: float, duration: float, warmup: float) -> Any:
        server = self.servers[name]
        cpu = server.cpu_seconds()
        run = run_async(
            run_open_loop(
                server.target,
                self.requests[name],
                rate=rate,
                duration_s=warmup + duration,
                timeout_s=OPEN_TIMEOUT_SECONDS,
            )
        )
        summary = summarise(run, warmup_s=warmup)
        return {
            **asdict(summary),
            "server_cpu_ms_per_request": 1000
            * (server.cpu_seconds() - cpu)
            / max(1, len(run.results)),
        }

    def overload(self, *, factor: float, duration: float) -> dict[str, Any]:
        results = {}
        for name in self.servers:
            if name == FLOOR:
                continue
            capacity = self.capacity[name]
            rate = factor * capacity
            print(f"Overload at {rate:.0f}/s ({factor:g} x {capacity:.0f}/s): {name}", flush=True)
            run = run_async(
                run_open_loop(
                    self.servers[name].target,
                    self.requests[name],
                    rate=rate,
                    duration_s=duration,
                    timeout_s=max(OPEN_TIMEOUT_SECONDS, 3 * self.deadline),
                    max_connections=1024,
                )
            )
            by_status: dict[str, int] = {}
            in_time = late = 0
            worst = 0.0
            for result in run.results:
                by_status[str(result.status)] = by_status.get(str(result.status), 0) + 1
                waited = result.latency_s - (
                    0 if math.isnan(result.send_lag_s) else result.send_lag_s
                )
                if result.status:
                    worst = max(worst, waited)
                if 200 <= result.status < 300:
                    if waited <= self.deadline:
                        in_time += 1
                    else:
                        late += 1
            answered_late = sum(
                1
                for result in run.results
                if result.status
                and result.latency_s - (0 if math.isnan(result.send_lag_s) else result.send_lag_s)
                > self.deadline
            )
            goodput = in_time / duration
            results[name] = {
                "capacity": capacity,
                "offered_rate": rate,
                "requests": len(run.results),
                "by_status": dict(sorted(by_status.items())),
                "ok_within_deadline": in_time,
                "ok_late": late,
                "answered_after_deadline": answered_late,
                "goodput": goodput,
                "goodput_to_capacity": goodput / capacity if capacity else math.nan,
                "slowest_answer_ms": 1000 * worst,
                "deadline_s": self.deadline,
                "guard": self.guard,
            }
        return results

    def stack(self, stack: ExitStack, *, duration: float, rounds: int, warmup: float) -> Any:
        env = {REDIS_URL_VARIABLE: self._redis_url}
        app = ["bench.floor_app:app"]
        self._add(stack, "floor asyncio+h11", app, env, loop="asyncio", http="h11")
        self._add(stack, "floor uvloop+httptools", app, env, loop="uvloop", http="httptools")
        names = ["floor asyncio+h11", "floor uvloop+httptools"]
        for name in names:
            self._closed_run(name, max(warmup, 0.1))
        return self.closed(duration=duration, rounds=rounds, names=names)


def _fmt(value: float, spec: str = ".0f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def print_closed(closed: dict[str, Any]) -> None:
    rounds = len(next(iter(closed["rounds"].values())))
    print(
        f"\nClosed loop: {rounds} rounds, medians; CPU per request of the server process "
        "(CPU x floor: the floor's CPU per request over the server's)"
    )
    header = ["server", "req/s", "x floor", "p50 ms", "p99 ms", "CPU ms/req", "CPU x floor"]
    header += ["errors"]
    header += ["gen CPU ms/req", "gen CPU %", "others %"]
    rows = [
        [
            name,
            _fmt(s["rate"]),
            _fmt(s["ratio_to_floor"], ".3f"),
            _fmt(s["p50_ms"], ".2f"),
            _fmt(s["p99_ms"], ".2f"),
            _fmt(s["server_cpu_ms_per_request"], ".2f"),
            _fmt(s["cpu_ratio_to_floor"], ".3f"),
            str(s["errors"]),
            _fmt(s["generator_cpu_ms_per_request"], ".3f"),
            _fmt(s["generator_cpu_percent"]),
            _fmt(s["others_cpu_percent"]),
        ]
        for name, s in closed["summary"].items()
    ]
    print_table(header, rows)


def print_open(results: dict[str, Any]) -> None:
    print("\nOpen loop: latency in ms from each request's due time, Rapport beside the floor")
    header = ["server", "% cap", "rate/s", "achieved/s", "errors", "p50", "p99", "p99.9", "max"]
    rows = []
    for name, runs in results.items():
        for row in runs:
            for server in (FLOOR, name):
                summary = row[server]
                latency = summary["latency_ms"]
                rows.append(
                    [
                        server,
                        f"{100 * row['fraction']:.0f}%",
                        _fmt(row["rate"]),
                        _fmt(summary["achieved_rate"], ".1f"),
                        str(summary["errors"]),
                        *(_fmt(latency[label], ".2f") for label in ("p50", "p99", "p99.9", "max")),
                    ]
                )
    print_table(header, rows)


def print_overload(results: dict[str, Any]) -> None:
    print("\nOverload: goodput = 2xx answered within the deadline (from send), per second")
    header = ["server", "capacity/s", "offered/s", "goodput/s", "x capacity", "late 2xx"]
    header += ["answers after deadline", "slowest ms", "statuses"]
    rows = [
        [
            name,
            _fmt(r["capacity"]),
            _fmt(r["offered_rate"]),
            _fmt(r["goodput"]),
            _fmt(r["goodput_to_capacity"], ".2f"),
            str(r["ok_late"]),
            str(r["answered_after_deadline"]),
            _fmt(r["slowest_answer_ms"]),
            json.dumps(r["by_status"]),
        ]
        for name, r in results.items()
    ]
    print_table(header, rows)


if __name__ == "__main__":
    typer.run(main)
