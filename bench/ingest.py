"""Events per second one worker accepts over HTTP (`POST /v1/events`), on Redis and on SQLite.

    .venv/bin/python -m bench.ingest [--stores redis,sqlite] [--batches 20] [--batch-size 1000]
        [--customers 10000] [--connections 1] [--seed 7] [--out var/bench/ingest.json]

Set-up: a redis-server on a free loopback port and a SQLite file in a temporary folder, both
empty but for an API key (scope `events:write`); Rapport on each store as its own uvicorn
process, one worker (uvloop, httptools). The batches are built before the clock starts: each
holds `--batch-size` request events (withdrawals, top-ups, transfers) of customers drawn at
random among `--customers`, with unique event ids and times in the last days. One batch warms
each server up; then `--batches` batches are posted over `--connections` keep-alive
connections, each sending its next batch when the answer to the previous one arrived.

Reported: events accepted per second (from the answers' `accepted` counts, over the wall time
of the run), the server's CPU µs per event (utime + stime of its process), and batch latency.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.keys import create_key
from bench.harness import (
    Server,
    bench_stores,
    check_post,
    machine,
    print_table,
    run_async,
    serve,
    write_report,
)
from bench.loadgen import Target
from feature_store.credentials import Scope

EVENTS = "/v1/events"
_REQUESTS = [
    {"request": "cash_withdrawal", "amount": 50, "currency": "EUR", "receipt": False},
    {"request": "top_up", "amount": 20, "currency": "EUR"},
    {"request": "cash_withdrawal", "amount": 200, "currency": "EUR", "receipt": True},
]
_TOUCHPOINTS = [("atm", "atm-0042"), ("mobile_app", "app-ios"), ("web", "web")]


def event_batches(
    *, batches: int, batch_size: int, customers: int, seed: int, now: datetime
) -> list[bytes]:
    """`batches` JSON bodies of `batch_size` events each, customers drawn with `seed`."""
    rng = random.Random(seed)
    bodies = []
    for number in range(batches):
        events = []
        for position in range(batch_size):
            channel, touchpoint = _TOUCHPOINTS[position % len(_TOUCHPOINTS)]
            occurred = now - timedelta(seconds=rng.randrange(1, 7 * 86_400))
            events.append(
                {
                    "event_id": f"bench-{seed}-{number}-{position}",
                    "customer_id": f"cust-{rng.randrange(customers):06d}",
                    "touchpoint": touchpoint,
                    "channel": channel,
                    "type": "request",
                    "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
                    "attributes": _REQUESTS[position % len(_REQUESTS)],
                }
            )
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


async def post_all(target: Target, requests: list[bytes], connections: int) -> list[Any]:
    """Post every request once over `connections` connections; (status, answer, seconds)."""
    queue = list(reversed(requests))
    answers: list[Any] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                answers.append((status, json.loads(body), time.perf_counter() - started))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return answers


def measure(server: Server, requests: list[bytes], connections: int) -> dict[str, Any]:
    cpu, wall = server.cpu_seconds(), time.perf_counter()
    answers = run_async(post_all(server.target, requests, connections))
    elapsed, cpu = time.perf_counter() - wall, server.cpu_seconds() - cpu
    ok = [answer for status, answer, _ in answers if status == 200]
    accepted = sum(int(answer["accepted"]) for answer in ok)
    posted = sum(len(answer["results"]) for answer in ok)
    seconds = sorted(took for _, _, took in answers)
    return {
        "batches": len(answers),
        "failed_batches": len(answers) - len(ok),
        "events_posted": posted,
        "events_accepted": accepted,
        "seconds": elapsed,
        "events_per_second": accepted / elapsed,
        "server_cpu_s": cpu,
        "server_cpu_us_per_event": 1e6 * cpu / max(1, accepted),
        "batch_ms": {
            "p50": 1000 * statistics.median(seconds),
            "max": 1000 * seconds[-1],
        },
    }


def main(
    stores: Annotated[str, typer.Option(help="Rapport's stores: redis,sqlite")] = "redis,sqlite",
    batches: Annotated[int, typer.Option(min=1, help="Batches measured per store.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Events per batch.")] = 1000,
    customers: Annotated[int, typer.Option(min=1, help="Customers the events spread over.")] = (
        10_000
    ),
    connections: Annotated[int, typer.Option(min=1, help="Keep-alive connections.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the customers drawn.")] = 7,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path(
        "var/bench/ingest.json"
    ),
) -> None:
    """Measure events/s accepted by one worker on each store; print a table, write JSON."""
    chosen = [store.strip() for store in stores.split(",") if store.strip()]
    if not chosen or set(chosen) - {"redis", "sqlite"}:
        raise typer.BadParameter("redis and/or sqlite", param_hint="--stores")
    now = datetime.now(UTC).replace(microsecond=0)
    print(f"Building {batches + 1} batches of {batch_size} events...", flush=True)
    bodies = event_batches(
        batches=batches + 1, batch_size=batch_size, customers=customers, seed=seed, now=now
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rapport-ingest-") as folder, ExitStack() as stack:
        urls = stack.enter_context(bench_stores(stack, Path(folder)))
        for store in chosen:
            key = create_key(urls.url(store), "bench", [Scope.EVENTS_WRITE])
            headers = {"Authorization": f"Bearer {key}"}
            env = {"RAPPORT_STORE": urls.url(store), "RAPPORT_LOG_LEVEL": "WARNING"}
            app = ["api.app:create_app", "--factory"]
            with serve(f"rapport-{store}", app, env, Path(folder)) as server:
                check_post(server, EVENTS, bodies[0], headers)  # the warm-up batch
                requests = [server.target.post_json(EVENTS, body, headers) for body in bodies]
                print(f"Posting {batches} batches to {server.name}", flush=True)
                results[server.name] = measure(server, requests[1:], connections)
    report = {
        "benchmark": "ingest",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "stores": chosen,
            "batches": batches,
            "batch_size": batch_size,
            "customers": customers,
            "connections": connections,
            "seed": seed,
        },
        "machine": machine(),
        "results": results,
    }
    print(f"\nPOST {EVENTS}: {batches} batches of {batch_size} over {customers:,} customers")
    header = ["server", "events/s", "accepted", "failed batches", "CPU µs/event", "batch p50 ms"]
    rows = [
        [
            name,
            f"{r['events_per_second']:,.0f}",
            f"{r['events_accepted']:,}",
            str(r["failed_batches"]),
            f"{r['server_cpu_us_per_event']:,.0f}",
            f"{r['batch_ms']['p50']:,.0f}",
        ]
        for name, r in results.items()
    ]
    print_table(header, rows)
    write_report(report, out)


if __name__ == "__main__":
    typer.run(main)
