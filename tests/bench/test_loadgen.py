"""The open-loop generator and its statistics, against a scripted loopback HTTP server.

Nothing here asserts how fast anything is: only what was sent, what was counted, and bounds
that follow from causality (an answer cannot come before the request it waits for was due).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bench.loadgen import Result, Run, Target, percentile, run_open_loop, summarise

RATE = 100.0  # requests per second: 10 ms apart


class ScriptedServer:
    """Answers by what the body says: `fail` 500, `degraded` a degraded 200, `close` a 200 that
    closes the connection, `never` nothing, `hold` only once `release_after` requests arrived.
    """

    def __init__(self, release_after: int = 0) -> None:
        self.release_after = release_after
        self.arrived = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._released = asyncio.Event()
        self._closing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
                assert length is not None
                body = await reader.readexactly(int(length.group(1)))
                self.arrived += 1
                if self.arrived >= self.release_after:
                    self._released.set()
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                keep_open = await self._answer(body, writer)
                self._in_flight -= 1
                if not keep_open:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(handler)

    async def _answer(self, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"never" in body:
            await self._closing.wait()
            return False
        if b"hold" in body:
            await self._released.wait()
        status = b"500 Internal Server Error" if b"fail" in body else b"200 OK"
        payload = b'{"degraded":true}' if b"degraded" in body else b'{"degraded":false}'
        closing = b"close" in body
        writer.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: "
            + str(len(payload)).encode()
            + b"\r\n"
            + (b"connection: close\r\n" if closing else b"")
            + b"\r\n"
            + payload
        )
        await writer.drain()
        return not closing

    async def close(self) -> None:
        """Let every handler end (none is left pending when the event loop closes)."""
        self._closing.set()
        self._released.set()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@asynccontextmanager
async def scripted(server: ScriptedServer) -> AsyncIterator[Target]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield Target("127.0.0.1", port)
    finally:
        listener.close()
        await server.close()


def requests(target: Target, *bodies: bytes) -> list[bytes]:
    return [target.post_json("/v1/decisions", body) for body in bodies]


def drive(server: ScriptedServer, bodies: list[bytes], count: int, timeout_s: float = 2) -> Run:
    async def run() -> Run:
        async with scripted(server) as target:
            return await run_open_loop(
                target,
                requests(target, *bodies),
                rate=RATE,
                duration_s=count / RATE,
                timeout_s=timeout_s,
            )

    return asyncio.run(run())


def test_sends_each_request_when_due_without_waiting_for_earlier_answers() -> None:
    # The first answer is held until the fourth request arrives: a closed-loop client would
    # wait for it forever (here: time out), an open-loop one sends the next three on schedule.
    server = ScriptedServer(release_after=4)
    run = drive(server, [b"hold", b"{}", b"{}", b"{}", b"{}"], count=10)

    assert [result.status for result in run.results] == [200] * 10
    assert server.arrived == 10
    assert server.max_in_flight >= 2
    assert [result.due_s for result in run.results] == pytest.approx(
        [index / RATE for index in range(10)]
    )
    # Request 0 was answered after request 3 was sent, and that was not before it was due.
    first, fourth = run.results[0], run.results[3]
    assert first.latency_s >= fourth.due_s - first.due_s
    assert all(result.send_lag_s >= 0 for result in run.results)


def test_counts_errors_degraded_answers_and_reconnects_after_a_close() -> None:
    bodies = [b"{}", b"fail", b"degraded", b"close", b"{}"]
    run = drive(ScriptedServer(), bodies, count=10)

    assert [result.status for result in run.results] == [200, 500, 200, 200, 200] * 2
    assert [result.degraded for result in run.results] == [False, False, True, False, False] * 2
    summary = summarise(run, warmup_s=0)
    assert (summary.count, summary.errors, summary.degraded) == (10, 2, 2)


def test_a_request_never_answered_fails_at_its_timeout_and_the_run_ends() -> None:
    # A timeout that a loaded host cannot make the answered requests reach (they are answered
    # at once), short enough to keep the test quick.
    timeout_s = 1.0
    run = drive(
        ScriptedServer(), [b"never", b"{}", b"{}", b"{}", b"{}"], count=5, timeout_s=timeout_s
    )

    unanswered, *answered = run.results
    assert unanswered.status == 0
    # Ended by its own timeout, not earlier (load only delays it): the timeout runs from the
    # request's due time, as its latency does; the loop's clock may round it by a tick.
    tick = time.get_clock_info("monotonic").resolution
    assert unanswered.latency_s >= timeout_s - max(tick, 1e-3)
    assert [result.status for result in answered] == [200] * 4
    assert summarise(run, warmup_s=0).errors == 1


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(10, 1), (50, 5), (51, 6), (90, 9), (99, 10), (100, 10)],
)
def test_percentile_is_the_nearest_rank(percent: float, expected: float) -> None:
    assert percentile([float(value) for value in range(1, 11)], percent) == expected


def test_percentile_uses_exact_ranks() -> None:
    # 99.9% of 1000 is rank 999; in floats 99.9 / 100 * 1000 is a hair above 999 (ceiling 1000).
    assert percentile([float(value) for value in range(1, 1001)], 99.9) == 999
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)


def test_summary_discards_the_warm_up_and_reports_milliseconds() -> None:
    # Ten requests 0.1 s apart; each takes (i + 1) ms; the sixth fails.
    results = [
        Result(
            due_s=index / 10,
            send_lag_s=0.0001,
            latency_s=(index + 1) / 1000,
            status=500 if index == 5 else 200,
            degraded=False,
        )
        for index in range(10)
    ]
    run = Run(offered_rate=10, results=results, connections_opened=1)

    summary = summarise(run, warmup_s=0.35)  # keeps requests 4 to 9

    assert (summary.count, summary.errors) == (6, 1)
    assert summary.latency_ms == pytest.approx(
        {"p50": 7.0, "p90": 10.0, "p99": 10.0, "p99.9": 10.0, "max": 10.0}
    )
    assert summary.send_lag_ms["p50"] == pytest.approx(0.1)
    # Five answers between the first measured due time (0.4 s) and the last answer (0.91 s).
    assert summary.achieved_rate == pytest.approx(5 / 0.51)
