"""Latency of `POST /v1/decisions` on the embedded store, beside a bare FastAPI endpoint.

    .venv/bin/python -m bench.decisions_latency [--rate 200] [--duration 20] [--warmup 3]
        [--customers 2000] [--seed 7] [--out var/bench/decisions_latency.json] [--pin]
        [--store sqlite|redis]

Set-up: a synthetic population is loaded into a fresh SQLite store in a temporary folder (or,
with `--store redis`, into a redis-server started here on a free loopback port); then
Rapport (`uvicorn api.app:create_app --factory` on that store) and the bare endpoint of
`bench.baseline_app` are started as separate processes, one uvicorn worker each, on free
loopback ports. Each server in turn (the baseline first) gets the same open-loop load, the same
requests at the same offered rate (see `bench.loadgen`); the first `--warmup` seconds are
discarded. Requests cycle over the population's customers, at ATMs, the web and the app, and
carry an API key (scope `decisions`) created in the bench store, so Rapport checks it as in
production.

The load generator runs on the same machine as the servers and shares its CPUs with them; its
own CPU use and how late it sent requests (send lag) are reported beside the latencies. `--pin`
puts the generator on one CPU and the servers on the others.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from api.cli.common import load_events
from api.cli.keys import create_key
from bench.loadgen import (
    LAG_PERCENTILES,
    LATENCY_PERCENTILES,
    Run,
    Summary,
    Target,
    percentile_label,
    run_open_loop,
    summarise,
)
from bench.redis_memory import redis_server
from engine.config import EngineConfig
from feature_store.credentials import Scope
from feature_store.factory import open_store
from training.simulation.population import PopulationSpec, generate_population

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
DECISIONS = "/v1/decisions"
#: A request that has not been answered this long after its due time fails.
TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 256
STARTUP_SECONDS = 60.0
STOP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Server:
    """A server under test, running as its own process."""

    name: str
    target: Target
    process: subprocess.Popen[bytes]
    log: Path


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU time used during a run, in % of one core (a machine of n CPUs has n * 100%).

    `others` is what every other process of the machine used meanwhile: the noise. `server`
    and `others` are None where they cannot be read (they come from Linux's /proc).
    """

    generator: float
    server: float | None
    others: float | None


@dataclass(frozen=True, slots=True)
class Measurement:
    """One server's run under load, summarised, with the CPU it cost."""

    server: str
    summary: Summary
    cpu: CpuUse
    connections_opened: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What to measure: the offered rate (per second), times (seconds), the population."""

    rate: float
    duration_s: float
    warmup_s: float
    customers: int
    seed: int
    pin: bool
    store: str = "sqlite"


def main(
    rate: Annotated[float, typer.Option(min=1, help="Offered requests per second.")] = 200,
    duration: Annotated[float, typer.Option(min=1, help="Measured seconds per server.")] = 20,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds discarded first.")] = 3,
    customers: Annotated[int, typer.Option(min=1, help="Synthetic customers.")] = 2000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the population.")] = 7,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path(
        "var/bench/decisions_latency.json"
    ),
    pin: Annotated[bool, typer.Option(help="Generator on one CPU, servers on the rest.")] = False,
    store: Annotated[
        str, typer.Option(help="sqlite (a temp file) or redis (a redis-server started here).")
    ] = "sqlite",
) -> None:
    """Measure p50/p99 latency of POST /v1/decisions beside a bare FastAPI endpoint."""
    if store not in ("sqlite", "redis"):
        raise typer.BadParameter("--store must be sqlite or redis")
    plan = Plan(rate, duration, warmup, customers, seed, pin, store)
    measurements, events = run_benchmark(plan)
    report = {
        "benchmark": "decisions_latency",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            **asdict(plan),
            "events_loaded": events,
            "timeout_s": TIMEOUT_SECONDS,
            "max_connections": MAX_CONNECTIONS,
        },
        "machine": _machine(),
        "results": {m.server: _as_json(m) for m in measurements},
    }
    print_report(measurements, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {out}")


def run_benchmark(plan: Plan) -> tuple[list[Measurement], int]:
    """Load the store, start both servers, measure each in turn (baseline first), stop them.

    Returns the measurements and how many events were loaded.
    """
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as folder, ExitStack() as servers:
        store_url = (
            f"redis://{HOST}:{servers.enter_context(redis_server(Path(folder)))}/0"
            if plan.store == "redis"
            else f"sqlite:///{Path(folder) / 'bench.db'}"
        )
        print(f"Loading {plan.customers:,} synthetic customers into {store_url}", flush=True)
        customer_ids, events = load_population(store_url, customers=plan.customers, seed=plan.seed)
        count = round(plan.rate * (plan.warmup_s + plan.duration_s))
        bodies = decision_bodies(customer_ids, count=count)
        generator_cpus = _pin_servers(plan.pin)
        # Both servers get the same bytes; Rapport checks the key (cached for a few seconds).
        headers = {"Authorization": f"Bearer {create_key(store_url, 'bench', [Scope.DECISIONS])}"}
        rapport_env = {"RAPPORT_STORE": store_url, "RAPPORT_LOG_LEVEL": "WARNING"}
        started = [
            servers.enter_context(serve("baseline", ["bench.baseline_app:app"], {}, folder)),
            servers.enter_context(
                serve("rapport", ["api.app:create_app", "--factory"], rapport_env, folder)
            ),
        ]
        if generator_cpus:
            os.sched_setaffinity(0, generator_cpus)
        for server in started:
            wait_until_healthy(server)
            check_decision(server, bodies[0], headers)
        measurements = []
        for server in started:
            print(f"Measuring {server.name}: {plan.rate:g}/s for {count} requests", flush=True)
            requests = [server.target.post_json(DECISIONS, body, headers) for body in bodies]
            measurements.append(measure(server, requests, plan))
    return measurements, events


def load_population(store_url: str, *, customers: int, seed: int) -> tuple[list[str], int]:
    """Load a synthetic population ending now into the store; its customer ids, events."""
    end = datetime.now(UTC).replace(microsecond=0)
    spec = PopulationSpec(customers=customers, seed=seed, start=end - timedelta(days=180))
    population = generate_population(spec)
    store = open_store(store_url, EngineConfig())
    try:
        loaded = load_events(store, population.events)
    finally:
        store.close()
    return sorted(population.truth), loaded


def decision_bodies(customer_ids: list[str], *, count: int) -> list[bytes]:
    """JSON bodies of decision requests: customer `i % n`, at an ATM, the web or the app."""
    touchpoints = [("atm", "atm-{:04d}"), ("web", "web"), ("mobile_app", "app-ios")]
    bodies = []
    for index in range(max(1, min(count, 3 * len(customer_ids)))):
        channel, touchpoint = touchpoints[index % len(touchpoints)]
        request = {
            "customer_id": customer_ids[index % len(customer_ids)],
            "touchpoint": touchpoint.format(1 + index % 500),
            "channel": channel,
            "context": {},
        }
        bodies.append(json.dumps(request).encode())
    return bodies


@contextmanager
def serve(name: str, app: list[str], env: dict[str, str], folder: str) -> Iterator[Server]:
    """Run `uvicorn <app>` on a free loopback port until the block ends (or fails)."""
    port = _free_port()
    log = Path(folder) / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", *app, "--host", HOST, "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    # Inherited RAPPORT_* settings would make runs differ from machine to machine.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**environment, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops the servers
        )
    try:
        yield Server(name=name, target=Target(HOST, port), process=process, log=log)
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    url = f"http://{server.target.host}:{server.target.port}/healthz"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            _fail(server, f"exited with code {server.process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    _fail(server, f"did not answer {url} within {STARTUP_SECONDS:g} s")


def check_decision(server: Server, body: bytes, headers: dict[str, str]) -> None:
    """One decision before the load: a failure or a degraded answer would measure nothing."""
    url = f"http://{server.target.host}:{server.target.port}{DECISIONS}"
    headers = {**headers, "Content-Type": "application/json"}
    response = httpx.post(url, content=body, headers=headers)
    if response.status_code != 200 or response.json().get("degraded"):
        _fail(server, f"answered a decision with {response.status_code}: {response.text[:300]}")


def measure(server: Server, requests: list[bytes], plan: Plan) -> Measurement:
    """One open-loop run of `requests` against `server`, with the CPU it cost."""
    meter = _CpuMeter(server.process.pid)
    run: Run = asyncio.run(
        run_open_loop(
            server.target,
            requests,
            rate=plan.rate,
            duration_s=plan.warmup_s + plan.duration_s,
            timeout_s=TIMEOUT_SECONDS,
            max_connections=MAX_CONNECTIONS,
        )
    )
    return Measurement(
        server=server.name,
        summary=summarise(run, warmup_s=plan.warmup_s),
        cpu=meter.read(),
        connections_opened=run.connections_opened,
    )


def print_report(measurements: list[Measurement], report: dict[str, Any]) -> None:
    """Two plain-text tables (they survive logs and pipes): latencies, then the load's cost."""
    settings, machine = report["settings"], report["machine"]
    print(
        f"\nPOST /v1/decisions, open loop, {settings['duration_s']:g} s measured after "
        f"{settings['warmup_s']:g} s of warm-up; latency in ms from each request's due time"
    )
    labels = [percentile_label(p) for p in LATENCY_PERCENTILES]
    header = ["server", "offered/s", "achieved/s", "count", "errors", "degraded", *labels]
    rows = [
        [
            m.server,
            f"{m.summary.offered_rate:g}",
            f"{m.summary.achieved_rate:.1f}",
            str(m.summary.count),
            str(m.summary.errors),
            str(m.summary.degraded),
            *(f"{m.summary.latency_ms[label]:.2f}" for label in labels),
        ]
        for m in measurements
    ]
    _print_table(header, rows)
    print("\nThe load's side: send lag in ms, CPU in % of one core")
    lags = [percentile_label(p) for p in LAG_PERCENTILES]
    header = ["server", *(f"lag {label}" for label in lags)]
    header += ["generator CPU", "server CPU", "others' CPU"]
    rows = [
        [
            m.server,
            *(f"{m.summary.send_lag_ms[label]:.2f}" for label in lags),
            *(_percent(use) for use in (m.cpu.generator, m.cpu.server, m.cpu.others)),
        ]
        for m in measurements
    ]
    _print_table(header, rows)
    print(
        f"\n{machine['cpus']} CPUs, shared by the generator, the servers and any other process "
        f"(others' CPU){': generator pinned apart' if settings['pin'] else ''}."
    )
    for m in measurements:
        if m.summary.errors or m.summary.achieved_rate < 0.95 * m.summary.offered_rate:
            print(
                f"{m.server} did not keep up with {m.summary.offered_rate:g}/s "
                f"({m.summary.errors} errors, {m.summary.achieved_rate:.1f}/s answered): its "
                "latencies measure the queue, not the service time. Try a lower --rate."
            )


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def _as_json(measurement: Measurement) -> dict[str, Any]:
    return {
        **asdict(measurement.summary),
        "cpu_percent": asdict(measurement.cpu),
        "connections_opened": measurement.connections_opened,
    }


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return described.stdout.strip()


def _pin_servers(pin: bool) -> set[int]:
    """With `pin`, restrict this process (and so the servers it starts next) to all CPUs but
    one, and return that one for the generator; without, return no CPU."""
    if not pin:
        return set()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise typer.BadParameter("--pin needs at least two CPUs", param_hint="--pin")
    os.sched_setaffinity(0, cpus[1:])
    return {cpus[0]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _CpuMeter:
    """Reads CPU clocks when made and again on `read()`: the generator (this process), the
    server, and the whole machine."""

    def __init__(self, server_pid: int) -> None:
        self._server_pid = server_pid
        self._wall = time.perf_counter()
        self._generator = time.process_time()
        self._server = _process_cpu_seconds(server_pid)
        self._machine = _machine_busy_seconds()

    def read(self) -> CpuUse:
        wall = time.perf_counter() - self._wall
        generator = time.process_time() - self._generator
        server = _elapsed(self._server, _process_cpu_seconds(self._server_pid))
        machine = _elapsed(self._machine, _machine_busy_seconds())
        others = None
        if server is not None and machine is not None:
            others = max(0.0, machine - generator - server)
        return CpuUse(
            generator=100 * generator / wall,
            server=None if server is None else 100 * server / wall,
            others=None if others is None else 100 * others / wall,
        )


def _elapsed(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot, from Linux's /proc/stat (else None)."""
    try:
        totals = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    ticks = [int(value) for value in totals[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its threads (Linux only, else None)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fail(server: Server, problem: str) -> NoReturn:
    tail = server.log.read_text(errors="replace")[-2000:]
    raise SystemExit(f"The {server.name} server {problem}. Its log ends with:\n{tail}")


if __name__ == "__main__":
    typer.run(main)
