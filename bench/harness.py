"""What the HTTP benches share: servers under test as uvicorn processes, their CPU clocks, the
stores they run on, a population to decide for, and plain-text tables.

Every server is its own process, one uvicorn worker, on a free loopback port; the bench reads
its CPU time from Linux's /proc before and after each run.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import httpx
import uvloop

from api.cli.common import load_events
from bench.loadgen import Target
from bench.redis_memory import redis_server
from engine.config import EngineConfig
from feature_store.factory import open_store
from training.simulation.population import PopulationSpec, generate_population

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
STARTUP_SECONDS = 60.0
STOP_SECONDS = 10.0
Loop = Literal["asyncio", "uvloop"]
Http = Literal["h11", "httptools"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Server:
    """A server under test, running as its own process."""

    name: str
    target: Target
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process and its threads so far."""
        return process_cpu_seconds(self.process.pid)


@dataclass
class Stores:
    """A redis-server started for the bench (floor and Rapport on Redis) and a SQLite file."""

    redis_url: str
    sqlite_url: str
    folder: Path
    loaded: dict[str, int] = field(default_factory=dict)

    def url(self, store: str) -> str:
        return self.redis_url if store == "redis" else self.sqlite_url


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop: less of the shared CPUs than asyncio's own loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


@contextmanager
def bench_stores(stack: ExitStack, folder: Path) -> Iterator[Stores]:
    """A fresh redis-server (Rapport's keys, and the floor's under `floor:`) and a SQLite path."""
    port = stack.enter_context(redis_server(folder))
    yield Stores(f"redis://{HOST}:{port}/0", f"sqlite:///{folder / 'bench.db'}", folder)


def load(stores: Stores, store: str, *, customers: int, seed: int) -> list[str]:
    """Load the synthetic population into one store; its customer ids."""
    started = time.perf_counter()
    print(f"Loading {customers:,} synthetic customers into {store}...", flush=True)
    customer_ids, events = load_population(stores.url(store), customers=customers, seed=seed)
    stores.loaded[store] = events
    print(f"  {events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    return customer_ids


@contextmanager
def serve(
    name: str,
    app: list[str],
    env: dict[str, str],
    folder: Path,
    *,
    loop: Loop = "uvloop",
    http: Http = "httptools",
) -> Iterator[Server]:
    """Run `uvicorn <app>` (one worker) on a free loopback port until the block ends."""
    port = free_port()
    log = folder / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", *app, "--host", HOST, "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    command += ["--loop", loop, "--http", http]
    # Inherited RAPPORT_* settings would make runs differ from machine to machine.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    environment["PYTHONPATH"] = str(REPO)
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**environment, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the bench, which stops the servers
        )
    server = Server(name=name, target=Target(HOST, port), process=process, log=log)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    url = f"http://{server.target.host}:{server.target.port}/healthz"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            fail(server, f"exited with code {server.process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    fail(server, f"did not answer {url} within {STARTUP_SECONDS:g} s")


def check_post(server: Server, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """One request before the load: a failure or a degraded answer would measure nothing."""
    url = f"http://{server.target.host}:{server.target.port}{path}"
    response = httpx.post(
        url, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=30
    )
    answer = response.json() if response.status_code == 200 else None
    if answer is None or (isinstance(answer, dict) and answer.get("degraded")):
        fail(server, f"answered {path} with {response.status_code}: {response.text[:300]}")
    return answer


def fail(server: Server, problem: str) -> NoReturn:
    tail = server.log.read_text(errors="replace")[-2000:]
    raise SystemExit(f"The {server.name} server {problem}. Its log ends with:\n{tail}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads, from Linux's /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used since boot (Linux's /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": described.stdout.strip() or None,
        "load_average": os.getloadavg(),
    }


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {out}")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A plain-text table (it survives logs and pipes), first column left-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))


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
