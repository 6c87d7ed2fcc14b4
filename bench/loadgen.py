"""An open-loop load generator for one HTTP/1.1 endpoint, and the latency statistics of a run.

Open loop: request `i` is due at `start + i / rate` and is sent then, whether or not earlier
requests have been answered (each takes a connection of its own from a pool). Its latency is
counted from when it was due, not from when it was sent, so a server that stalls is charged for
every request that queues behind the stall (no coordinated omission). How late the generator
itself sent each request (its send lag) is recorded too, to show whether it kept up.

Two choices keep the generator light and punctual, since on a small machine it shares the CPUs
with the server it measures:

* a pacing thread wakes at each due time with `threading.Event.wait` (whose timeout is not
  rounded) and hands the request to the event loop; the loop's own timers round every sleep up
  to a whole millisecond, which added about half a millisecond to each latency in trials;
* the client speaks just enough HTTP/1.1 over asyncio streams (requests prepared as bytes in
  advance, responses framed by Content-Length) instead of a general HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

#: Latency percentiles reported for a run, in percent; 100 is the maximum.
LATENCY_PERCENTILES: tuple[float, ...] = (50, 90, 99, 99.9, 100)
#: Send-lag percentiles reported for a run, in percent.
LAG_PERCENTILES: tuple[float, ...] = (50, 99, 100)

#: How Rapport marks a decision made without the store (a 200 that measures the wrong path).
_DEGRADED_MARKS = (b'"degraded":true', b'"degraded": true')
#: A pooled connection idle for longer is not reused: the server may have closed it (uvicorn's
#: keep-alive timeout is 5 s), and a request written into a closed connection would fail.
_MAX_IDLE_SECONDS = 2.0
_ANSWER_ERRORS = (OSError, EOFError, asyncio.LimitOverrunError, ValueError)


class ResponseNotUnderstood(ValueError):
    """An HTTP response this minimal client does not parse (e.g. chunked, no Content-Length)."""


@dataclass(frozen=True, slots=True)
class Target:
    """An HTTP/1.1 server on a host and port."""

    host: str
    port: int

    def post_json(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
        """The bytes of a keep-alive `POST path` request with a JSON `body` and `headers`."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{extra}\r\n"
        )
        return head.encode("ascii") + body


@dataclass(frozen=True, slots=True)
class Result:
    """One request. Times are in seconds; `due_s` counts from the start of the run.

    `status` is the HTTP status, or 0 when no answer came (connection failure, timeout, or a
    response the client cannot parse); `latency_s` then runs to the failure. `send_lag_s` is
    NaN when the request was never written.
    """

    due_s: float
    send_lag_s: float
    latency_s: float
    status: int
    degraded: bool


@dataclass(frozen=True, slots=True)
class Run:
    """What one open-loop run recorded, request by request."""

    offered_rate: float
    results: list[Result]
    connections_opened: int


@dataclass(frozen=True, slots=True)
class Summary:
    """A run after its warm-up: rates per second, latencies and send lags in milliseconds.

    `achieved_rate` is the number of 200 answers over the span from the first measured due time
    to the last answer. Latency percentiles are over every measured request, failed ones at the
    time they failed; `errors` counts the requests that did not get a 200.
    """

    offered_rate: float
    achieved_rate: float
    count: int
    errors: int
    degraded: int
    latency_ms: dict[str, float]
    send_lag_ms: dict[str, float]


def percentile(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ascending `ordered`: the smallest value with at least
    `percent`% of the values at or below it (100 gives the maximum; NaN if there are none).
    """
    if not 0 < percent <= 100:
        raise ValueError(f"a percentile is in (0, 100], not {percent}")
    if not ordered:
        return math.nan
    # Exact arithmetic: in floats 99.9 / 100 * 1000 is a hair above 999, and its ceiling 1000.
    rank = math.ceil(Fraction(str(percent)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


def percentile_label(percent: float) -> str:
    """'p50', 'p99.9', and 'max' for 100."""
    return "max" if percent == 100 else f"p{percent:g}"


def summarise(run: Run, *, warmup_s: float) -> Summary:
    """Statistics of the requests due at or after `warmup_s` (the earlier ones are discarded)."""
    measured = [result for result in run.results if result.due_s >= warmup_s]
    answered = [result for result in measured if result.status == 200]
    if answered:
        span = max(r.due_s + r.latency_s for r in answered) - min(r.due_s for r in measured)
        achieved = len(answered) / span if span > 0 else math.nan
    else:
        achieved = 0.0
    latencies = sorted(result.latency_s for result in measured)
    lags = sorted(result.send_lag_s for result in measured if not math.isnan(result.send_lag_s))
    return Summary(
        offered_rate=run.offered_rate,
        achieved_rate=achieved,
        count=len(measured),
        errors=len(measured) - len(answered),
        degraded=sum(result.degraded for result in measured),
        latency_ms=_in_ms(latencies, LATENCY_PERCENTILES),
        send_lag_ms=_in_ms(lags, LAG_PERCENTILES),
    )


def _in_ms(ordered: Sequence[float], percents: Sequence[float]) -> dict[str, float]:
    return {percentile_label(p): 1000 * percentile(ordered, p) for p in percents}


async def run_open_loop(
    target: Target,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    timeout_s: float = 5.0,
    max_connections: int = 256,
) -> Run:
    """Send `floor(rate * duration_s)` requests at `rate` per second, cycling over `requests`.

    Bounded: every request gets its answer or fails within `timeout_s` of its due time, so
    the run ends at most `timeout_s` after the last due time. At most `max_connections` are
    open at once; a request due while all are busy waits for one, and the wait counts in its
    latency.
    """
    if rate <= 0 or duration_s <= 0 or timeout_s <= 0 or max_connections < 1:
        raise ValueError("rate, duration, timeout and max_connections must be positive")
    if not requests:
        raise ValueError("no requests to send")
    count = math.floor(rate * duration_s)
    loop = asyncio.get_running_loop()
    paced = loop.create_future()
    start = time.perf_counter() + 0.05  # time for the pacing thread to start
    sender = _Sender(_ConnectionPool(target, max_connections), requests, count, start, timeout_s)
    pacer = _Pacer(loop, sender.send, paced, start=start, rate=rate, count=count)
    pacer.start()
    try:
        await paced
        while sender.pending:
            await asyncio.wait(set(sender.pending))
    finally:
        pacer.stop()
        await sender.close()
    return Run(
        offered_rate=rate,
        results=[result for result in sender.results if result is not None],
        connections_opened=sender.pool.opened,
    )


class _Pacer(threading.Thread):
    """Calls `send(i, due)` in the event loop at each due time, then resolves `paced`.

    Due times are on the `time.perf_counter` clock.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[int, float], None],
        paced: asyncio.Future[None],
        *,
        start: float,
        rate: float,
        count: int,
    ) -> None:
        super().__init__(name="bench-pacer", daemon=True)
        self._loop, self._send, self._paced = loop, send, paced
        self._start, self._rate, self._count = start, rate, count
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            for index in range(self._count):
                due = self._start + index / self._rate
                # A loop, so that no request is sent early even if a wait ends a hair early.
                while (remaining := due - time.perf_counter()) > 0:
                    if self._stopped.wait(remaining):
                        return
                if self._stopped.is_set():
                    return
                self._loop.call_soon_threadsafe(self._send, index, due)
        except RuntimeError:  # the loop closed under us: the run was interrupted
            return
        finally:
            # Queued after the last send, so every request has its task when `paced` resolves.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, self._paced)

    def stop(self) -> None:
        self._stopped.set()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Sender:
    """Sends request `i` when the pacer says so, and records its `Result` at index `i`."""

    def __init__(
        self,
        pool: _ConnectionPool,
        requests: Sequence[bytes],
        count: int,
        start: float,
        timeout_s: float,
    ) -> None:
        self.pool, self._requests, self._start, self._timeout_s = pool, requests, start, timeout_s
        self.results: list[Result | None] = [None] * count
        self.pending: set[asyncio.Task[None]] = set()

    def send(self, index: int, due: float) -> None:
        task = asyncio.get_running_loop().create_task(self._send_one(index, due))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def close(self) -> None:
        for task in self.pending:
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        await self.pool.close()

    async def _send_one(self, index: int, due: float) -> None:
        sent = math.nan
        status, degraded = 0, False
        try:
            async with asyncio.timeout(self._timeout_s - max(0.0, time.perf_counter() - due)):
                connection = await self.pool.acquire()
                reusable = False
                try:
                    sent = time.perf_counter()
                    status, body, reusable = await connection.exchange(
                        self._requests[index % len(self._requests)]
                    )
                finally:
                    self.pool.release(connection, reusable=reusable)
            degraded = any(mark in body for mark in _DEGRADED_MARKS)
        except _ANSWER_ERRORS:
            status = 0
        self.results[index] = Result(
            due_s=due - self._start,
            send_lag_s=sent - due,
            latency_s=time.perf_counter() - due,
            status=status,
            degraded=degraded,
        )


class _Connection:
    """One keep-alive HTTP/1.1 connection: one request at a time, no pipelining."""

    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.perf_counter()

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send `request`; return the response's status, body, and whether to reuse this."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, length, keep_alive = _parse_head(head)
        body = await self.reader.readexactly(length)
        return status, body, keep_alive

    def close(self) -> None:
        self.writer.close()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, keep-alive) of a response head."""
    status_line, *header_lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ResponseNotUnderstood(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    length: int | None = None
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in header_lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep_alive = value == b"keep-alive"
        elif name == b"transfer-encoding":
            raise ResponseNotUnderstood("chunked responses are not supported")
    if length is None:
        raise ResponseNotUnderstood("the response has no Content-Length")
    return int(parts[1]), length, keep_alive


class _ConnectionPool:
    """Up to `limit` connections to `target`, most recently used first."""

    def __init__(self, target: Target, limit: int) -> None:
        self._target = target
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self.opened = 0

    async def acquire(self) -> _Connection:
        await self._slots.acquire()
        try:
            now = time.perf_counter()
            while self._idle:
                connection = self._idle.pop()
                if now - connection.idle_since < _MAX_IDLE_SECONDS and not (
                    connection.reader.at_eof()
                ):
                    return connection
                connection.close()
            reader, writer = await asyncio.open_connection(self._target.host, self._target.port)
        except BaseException:
            self._slots.release()
            raise
        self.opened += 1
        return _Connection(reader, writer)

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        if reusable:
            connection.idle_since = time.perf_counter()
            self._idle.append(connection)
        else:
            connection.close()
        self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()
