"""The floor Rapport's decisions are divided by: the least a decision endpoint can cost.

An async FastAPI route with a pydantic request model shaped like Rapport's decision request,
one Redis GET of a 1 kB value (a key per customer, as a profile would be) and a ~3 kB JSON
answer built from it: the web stack, one store round trip and the answer's encoding, with no
engine, no auth and no writes. The bench seeds the values (`seed_values`) and serves this with

    FLOOR_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn bench.floor_app:app

A customer without a value is answered too (`found: false`), so a missing seed shows in the
answers, not as errors.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import redis
import redis.asyncio
from fastapi import FastAPI, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Where the floor reads its values; the bench sets it.
REDIS_URL_VARIABLE = "FLOOR_REDIS_URL"
KEY_PREFIX = "floor:"
VALUE_BYTES = 1024

Channel = Literal[
    "atm", "web", "mobile_app", "call_center", "branch", "email", "sms", "chat", "social", "iot"
]


class FloorQuestion(BaseModel):
    """The same fields and limits as Rapport's decision request (`api.schemas.DecisionIn`)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")
    touchpoint: str = Field(min_length=1, max_length=64)
    channel: Channel
    context: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime | None = None


class FloorItem(BaseModel):
    id: str
    kind: str
    score: float
    probability: float
    reasons: dict[str, str]
    values: dict[str, Any]


class FloorAnswer(BaseModel):
    decision_id: str
    customer_id: str
    touchpoint: str
    decided_at: datetime
    found: bool
    items: list[FloorItem]
    degraded: bool
    policy_version: str


def stored_value(customer_id: str) -> bytes:
    """The 1 kB JSON value the bench stores for a customer (it stands in for a profile)."""
    head = {"customer_id": customer_id, "counts": {f"c{i}": i for i in range(40)}}
    text = json.dumps(head)
    return json.dumps({**head, "pad": "x" * max(0, VALUE_BYTES - len(text) - 10)}).encode()


def seed_values(redis_url: str, customer_ids: list[str]) -> None:
    """Store every customer's 1 kB value."""
    client = redis.Redis.from_url(redis_url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                pipe.set(KEY_PREFIX + customer_id, stored_value(customer_id))
            pipe.execute()
    finally:
        client.close()


def _items(value: dict[str, Any]) -> list[FloorItem]:
    """Twelve items, about 3 kB of JSON once encoded."""
    counts = value.get("counts", {})
    return [
        FloorItem(
            id=f"action:offer_{index:02d}",
            kind="default" if index < 4 else "action",
            score=0.5 + index / 100,
            probability=1 / (index + 1),
            reasons={"en": "You often do this here.", "it": "Lo fai spesso qui."},
            values={"amount": counts.get(f"c{index}", 0), "currency": "EUR"},
        )
        for index in range(12)
    ]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client = redis.asyncio.Redis.from_url(os.environ[REDIS_URL_VARIABLE])
    app.state.redis = client
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(title="Decision floor", lifespan=lifespan)


@app.post("/v1/decisions")
async def post_decision(question: FloorQuestion, request: Request) -> FloorAnswer:
    raw = await request.app.state.redis.get(KEY_PREFIX + question.customer_id)
    value = json.loads(raw) if raw is not None else {}
    return FloorAnswer(
        decision_id=f"dec_{uuid.uuid4().hex}",
        customer_id=question.customer_id,
        touchpoint=question.touchpoint,
        decided_at=question.at or datetime.now(UTC),
        found=raw is not None,
        items=_items(value),
        degraded=False,
        policy_version="floor",
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
