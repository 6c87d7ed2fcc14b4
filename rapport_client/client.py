"""`RapportClient`: the HTTP API as typed methods (see the package docstring)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel

from rapport_client.models import Decision, EventBatchResult, Outcome

Answer = TypeVar("Answer", bound=BaseModel)

#: Statuses worth trying again: the store or the worker was busy or down for a moment.
RETRIED_STATUSES = frozenset({502, 503, 504})


class RapportError(Exception):
    """An answer that is not a success: its status, the API's error code and message, the
    fields at fault (`[{"field", "reason"}]`) and the request id to quote to Rapport's
    operators."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, str]],
        request_id: str | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.request_id = request_id
        self.retry_after = retry_after


class RapportClient:
    """A client of one Rapport API. Thread-safe (one httpx connection pool); close it, or use
    it as a context manager.

    `timeout` is per request, in seconds: a touchpoint waits no longer for a decision than it
    can afford (Rapport answers degraded rather than late). `retries` bounds the attempts after
    the first for reads and idempotent writes; `max_retry_wait` bounds how long a `Retry-After`
    is honoured, in seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout: float = 2.0,
        retries: int = 2,
        max_retry_wait: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "rapport-client"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> RapportClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- the touchpoint's calls ----

    def decide(
        self,
        *,
        touchpoint: str,
        channel: str,
        customer_id: str | None = None,
        identity: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
        at: datetime | None = None,
        request_id: str | None = None,
    ) -> Decision:
        """Next-best-actions, defaults and the contact channel for one customer, named by
        `customer_id` or by an `identity` ({"type": "card_token", "value": ...})."""
        body: dict[str, Any] = {"touchpoint": touchpoint, "channel": channel}
        if customer_id is not None:
            body["customer_id"] = customer_id
        if identity is not None:
            body["identity"] = dict(identity)
        if context:
            body["context"] = dict(context)
        if at is not None:
            body["at"] = at.isoformat()
        # Not idempotent (each answer is a new logged decision): retried only if never sent.
        return self._call(Decision, "POST", "/v1/decisions", body, request_id, idempotent=False)

    def send_events(
        self, events: Sequence[Mapping[str, Any]], *, request_id: str | None = None
    ) -> EventBatchResult:
        """Post 1 to 1,000 events. Idempotent by `event_id`, so retried safely; a bad event is
        rejected alone (see each result's `error` and `field`)."""
        body = {"events": [_jsonable(event) for event in events]}
        return self._call(EventBatchResult, "POST", "/v1/events", body, request_id)

    def record_outcome(
        self,
        decision_id: str,
        item_id: str,
        outcome: Literal["accepted", "declined"],
        *,
        value: float | None = None,
        request_id: str | None = None,
    ) -> Outcome:
        """The customer's answer to one item (a default or an action) of a decision. A repeat
        is answered `duplicate`, so it is retried safely."""
        body: dict[str, Any] = {"decision_id": decision_id, "id": item_id, "outcome": outcome}
        if value is not None:
            body["value"] = value
        return self._call(Outcome, "POST", "/v1/outcomes", body, request_id)

    def customer(self, customer_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        """What Rapport knows about the customer, stated and learned, with reasons."""
        view: dict[str, Any] = self._json("GET", f"/v1/customers/{customer_id}", None, request_id)
        return view

    def state_preferences(
        self, customer_id: str, preferences: Mapping[str, Any], *, source: str | None = None
    ) -> dict[str, Any]:
        """Stated preferences (they win over what was learned); None withdraws one."""
        body: dict[str, Any] = {"preferences": dict(preferences)}
        if source is not None:
            body["source"] = source
        view: dict[str, Any] = self._json(
            "PUT", f"/v1/customers/{customer_id}/preferences", body, None
        )
        return view

    # ---- plumbing ----

    def _call(
        self,
        answer: type[Answer],
        method: str,
        path: str,
        body: Any,
        request_id: str | None,
        *,
        idempotent: bool = True,
    ) -> Answer:
        return answer.model_validate(
            self._json(method, path, body, request_id, idempotent=idempotent)
        )

    def _json(
        self,
        method: str,
        path: str,
        body: Any,
        request_id: str | None,
        *,
        idempotent: bool = True,
    ) -> Any:
        headers = {"X-Request-ID": request_id} if request_id else {}
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=body, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt >= self.retries:  # never reached the server: safe to try again
                    raise
                attempt += 1
                time.sleep(min(self.max_retry_wait, 0.05 * 2**attempt))
                continue
            if response.status_code in RETRIED_STATUSES and idempotent and attempt < self.retries:
                attempt += 1
                time.sleep(min(self.max_retry_wait, _retry_after(response) or 0.05 * 2**attempt))
                continue
            if response.is_success:
                return response.json()
            raise _error(response)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _error(response: httpx.Response) -> RapportError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return RapportError(
        response.status_code,
        str(body.get("error", "http_error")),
        str(body.get("message", response.reason_phrase)),
        list(body.get("errors", [])),
        response.headers.get("x-request-id"),
        _retry_after(response),
    )


def _jsonable(event: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in event.items()
    }
