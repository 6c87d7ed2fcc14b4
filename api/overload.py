"""Overload protection: a bound on requests in flight per worker, and a deadline for each.

Past its capacity a worker that takes every request makes all of them late: each waits behind
the others until clients give up, and the worker goes on serving requests nobody waits for, so
goodput falls to zero. `OverloadGuard` keeps it at capacity instead:

* at most `max_in_flight` requests run at once; a request beyond that waits for a slot for at
  most `queue_seconds`, then gets a fast `503` with `Retry-After` (it never started);
* a request still unanswered at its deadline gets a `503` at that moment,
  provided nothing of its response was sent yet, never a late answer. Its handler is cancelled
  and its slot stays taken until the handler has really finished: a handler running in a
  thread cannot be stopped, and the bound is on work, not on answers;
* health probes (`/healthz`, `/readyz`) are exempt, so a busy worker is not taken for dead.

The deadline is `deadline_seconds` (about a second) for what touchpoints wait on: decisions and
outcomes (`INTERACTIVE_PREFIXES`). Every other route (batches of events, exports, erasure, admin)
does bulk work whose time grows with its input, and gets `bulk_deadline_seconds`.

It is plain ASGI: Starlette's `BaseHTTPMiddleware` costs a task, a stream and a copy per
request, which shows at thousands of requests per second.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from api.settings import Settings

#: Paths answered whatever the load: liveness and readiness probes.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
#: Routes a touchpoint waits on, given the short deadline.
INTERACTIVE_PREFIXES = ("/v1/decisions", "/v1/outcomes")


@dataclass(frozen=True, slots=True)
class OverloadLimits:
    """How much a worker takes on. Times in seconds."""

    max_in_flight: int = 8
    queue_seconds: float = 0.1
    deadline_seconds: float = 1.0
    bulk_deadline_seconds: float = 30.0
    retry_after_seconds: int = 1

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.queue_seconds < 0 or self.retry_after_seconds < 0:
            raise ValueError("queue_seconds and retry_after_seconds must be >= 0")
        if self.deadline_seconds <= 0 or self.bulk_deadline_seconds <= 0:
            raise ValueError("deadlines must be > 0")

    @classmethod
    def of(cls, settings: Settings) -> OverloadLimits:
        return cls(
            max_in_flight=settings.max_in_flight,
            queue_seconds=settings.queue_wait_seconds,
            deadline_seconds=settings.request_deadline_seconds,
            bulk_deadline_seconds=settings.bulk_deadline_seconds,
            retry_after_seconds=settings.overload_retry_after_seconds,
        )


def _error_answer(code: str, message: str, retry_after: int) -> tuple[Message, Message]:
    """The start and body messages of a 503 in the API's error shape (see api/errors.py)."""
    body = json.dumps({"error": code, "message": message, "errors": []}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class _Exchange:
    """The guarded handler's `send`: it notes whether the answer started and cuts the handler
    off at its deadline. An answer begun after the deadline (the timer had not run yet: the
    event loop was busy) is replaced by the late-answer 503, and after a cut-off every message
    of the handler is dropped: the client already has its 503."""

    __slots__ = ("cut_off", "deadline", "late_answer", "send", "started")

    def __init__(self, send: Send, deadline: float, late_answer: tuple[Message, Message]) -> None:
        self.send, self.deadline, self.late_answer = send, deadline, late_answer
        self.started = False
        self.cut_off = False

    async def __call__(self, message: Message) -> None:
        if self.cut_off:
            return
        if message["type"] == "http.response.start":
            if time.monotonic() > self.deadline:
                await self.cut(answer=True)
                return
            self.started = True
        await self.send(message)

    async def cut(self, *, answer: bool) -> None:
        """Drop the handler's messages from now on; with `answer`, send the 503 instead."""
        if self.cut_off:
            return
        self.cut_off = True
        if answer:
            await send_answer(self.send, self.late_answer)


class OverloadGuard:
    """Pure ASGI middleware bounding the requests in flight and answering none late."""

    def __init__(self, app: ASGIApp, limits: OverloadLimits | None = None) -> None:
        self.app = app
        self.limits = limits or OverloadLimits()
        self._slots = asyncio.Semaphore(self.limits.max_in_flight)
        retry = self.limits.retry_after_seconds
        self._busy = _error_answer("overloaded", "the server is at capacity; retry later", retry)
        self._late = _error_answer(
            "deadline_exceeded", "the request could not be answered in time; retry later", retry
        )
        #: Counts since start, for the benchmarks and the logs: requests refused at the door
        #: and requests answered 503 at their deadline.
        self.refused = 0
        self.timed_out = 0
        #: Requests holding a slot now (handlers cut off at their deadline included).
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        if not await self._take_slot():
            self.refused += 1
            await send_answer(send, self._busy)
            return
        interactive = scope["path"].startswith(INTERACTIVE_PREFIXES)
        limits = self.limits
        deadline = arrived + (
            limits.deadline_seconds if interactive else limits.bulk_deadline_seconds
        )
        exchange = _Exchange(send, deadline, self._late)
        handler = asyncio.ensure_future(self.app(scope, receive, exchange))
        handler.add_done_callback(self._release)
        done, _ = await asyncio.wait((handler,), timeout=max(0.0, deadline - time.monotonic()))
        if done:
            if exchange.cut_off:  # it began its answer too late: the 503 went instead
                self.timed_out += 1
            handler.result()  # re-raises what the handler raised
            return
        if exchange.started or exchange.cut_off:
            # Its answer is on its way (its own, or the 503 that replaced a late one).
            await handler
            return
        self.timed_out += 1
        handler.cancel()
        await exchange.cut(answer=True)

    async def _take_slot(self) -> bool:
        """Take a slot now if one is free, else wait for one within the queueing budget."""
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns without suspending
            self.in_flight += 1
            return True
        if self.limits.queue_seconds <= 0:
            return False
        try:
            async with asyncio.timeout(self.limits.queue_seconds):
                await self._slots.acquire()
        except TimeoutError:
            return False
        self.in_flight += 1
        return True

    def _release(self, handler: asyncio.Future[None]) -> None:
        self.in_flight -= 1
        self._slots.release()
        if handler.cancelled():
            return
        # Retrieved, so that a handler cut off at its deadline that then failed is not
        # reported as "exception never retrieved"; one answered in time re-raised it already.
        handler.exception()


async def send_answer(send: Send, answer: tuple[Message, Message]) -> None:
    """Send a prepared answer. Its messages are copied: an outer middleware may add headers to
    the list it is given (CORS does), which must not pile up in the template."""
    start, body = answer
    await send({**start, "headers": list(start["headers"])})
    await send(dict(body))
