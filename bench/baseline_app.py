"""The bare FastAPI endpoint Rapport's decision latency is measured beside.

It parses a body shaped like a decision request and answers a small JSON, with no store, no
engine and no middleware: what any FastAPI route costs on this machine. The handler is a plain
`def`, as Rapport's decision route is, so both run in Starlette's thread pool.

Serve it with `uvicorn bench.baseline_app:app`.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

Channel = Literal[
    "atm", "web", "mobile_app", "call_center", "branch", "email", "sms", "chat", "social", "iot"
]


class DecisionQuestion(BaseModel):
    """The same fields and limits as Rapport's decision request."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")
    touchpoint: str = Field(min_length=1, max_length=64)
    channel: Channel
    context: dict[str, Any] = Field(default_factory=dict)


class DecisionAnswer(BaseModel):
    decision_id: str
    customer_id: str
    touchpoint: str
    defaults: list[dict[str, Any]]
    degraded: bool


app = FastAPI(title="Bare FastAPI baseline")


@app.post("/v1/decisions")
def post_decision(question: DecisionQuestion) -> DecisionAnswer:
    return DecisionAnswer(
        decision_id=f"dec_{uuid.uuid4().hex}",
        customer_id=question.customer_id,
        touchpoint=question.touchpoint,
        defaults=[],
        degraded=False,
    )


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
