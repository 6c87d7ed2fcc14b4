"""A closed-loop load generator: N keep-alive connections, each sending its next request as
soon as the previous answer has arrived, for a fixed time.

Closed loop measures capacity: with enough connections to keep the server busy, answers per
second is what it can serve. It is kept as cheap as possible, since on a small machine it shares
the CPUs with the server it measures: one `asyncio.Protocol` per connection (no streams, no
tasks), requests prepared as bytes in advance, responses framed by Content-Length with a single
search for the end of the head. Its own CPU is reported beside the server's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from bench.loadgen import Target, percentile

_END_OF_HEAD = b"\r\n\r\n"
_LENGTH = b"\r\ncontent-length:"


@dataclass(frozen=True, slots=True)
class ClosedLoopRun:
    """What a run counted. Rates per second, latencies in milliseconds.

    `answered` counts every complete answer within the run; `by_status` splits them by HTTP
    status. `rate` is 2xx answers per second; `latency_ms` percentiles are over every answer.
    `generator_cpu_s` is the CPU this process used during the run (its other threads too).
    """

    connections: int
    duration_s: float
    answered: int
    by_status: dict[int, int]
    rate: float
    latency_ms: dict[str, float]
    generator_cpu_s: float
    failed_connections: int


class _Client(asyncio.Protocol):
    """One connection: sends request i, waits for its whole answer, sends request i + step."""

    def __init__(self, requests: Sequence[bytes], first: int, step: int, run: _Tally) -> None:
        self._requests, self._index, self._step, self._run = requests, first, step, run
        self._buffer = bytearray()
        self._need = -1  # bytes of the current answer, once its head has been read
        self._sent_at = 0.0
        self._status = 0
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if self._run.stopping:
            self._transport.close()
            return
        request = self._requests[self._index % len(self._requests)]
        self._index += self._step
        self._sent_at = time.perf_counter()
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            if self._need < 0:
                end = buffer.find(_END_OF_HEAD)
                if end < 0:
                    return
                head = bytes(buffer[: end + 2]).lower()
                at = head.find(_LENGTH)
                if at < 0:
                    raise ValueError("an answer without Content-Length")
                length = int(head[at + len(_LENGTH) : head.index(b"\r\n", at + 2)])
                self._status = int(head[9:12])
                self._need = end + 4 + length
            if len(buffer) < self._need:
                return
            del buffer[: self._need]
            self._need = -1
            self._run.record(self._status, time.perf_counter() - self._sent_at)
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._run.stopping:
            self._run.failed_connections += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _Tally:
    def __init__(self) -> None:
        self.stopping = False
        self.recording = False
        self.by_status: dict[int, int] = {}
        self.latencies: list[float] = []
        self.failed_connections = 0

    def record(self, status: int, latency_s: float) -> None:
        if self.recording:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.latencies.append(latency_s)


async def run_closed_loop(
    target: Target,
    requests: Sequence[bytes],
    *,
    connections: int = 8,
    duration_s: float = 10.0,
    warmup_s: float = 0.0,
) -> ClosedLoopRun:
    """Keep `connections` requests in flight for `warmup_s` + `duration_s` seconds, cycling
    over `requests` (connection k sends requests k, k + n, k + 2n...); count the last
    `duration_s` seconds. Answers still in flight at the end are not counted."""
    if connections < 1 or duration_s <= 0 or warmup_s < 0 or not requests:
        raise ValueError("connections >= 1, duration_s > 0, warmup_s >= 0 and some requests")
    loop = asyncio.get_running_loop()
    tally = _Tally()
    clients, transports = [], []
    for number in range(connections):

        def connect(first: int = number) -> _Client:
            return _Client(requests, first, connections, tally)

        transport, client = await loop.create_connection(connect, target.host, target.port)
        clients.append(client)
        transports.append(transport)
    await asyncio.sleep(warmup_s)
    tally.recording = True
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(duration_s)
    tally.recording = False
    elapsed, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tally.stopping = True
    await asyncio.wait([client.closed for client in clients], timeout=10)
    for transport in transports:  # any whose last answer never came
        transport.close()
    ordered = sorted(tally.latencies)
    ok = sum(count for status, count in tally.by_status.items() if 200 <= status < 300)
    return ClosedLoopRun(
        connections=connections,
        duration_s=elapsed,
        answered=len(ordered),
        by_status=dict(sorted(tally.by_status.items())),
        rate=ok / elapsed,
        latency_ms={
            label: 1000 * percentile(ordered, p) if ordered else math.nan
            for label, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        generator_cpu_s=cpu,
        failed_connections=tally.failed_connections,
    )
