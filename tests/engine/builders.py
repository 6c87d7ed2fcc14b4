"""Event builders and hypothesis strategies shared by the engine tests."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from engine.events import Event
from engine.profile import Profile

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
_ids = itertools.count()


def event(
    type_: str,
    *,
    at: datetime = T0,
    customer_id: str = "cust-1",
    channel: str = "atm",
    touchpoint: str | None = None,
    event_id: str | None = None,
    **attributes: Any,
) -> Event:
    return Event(
        event_id=event_id or f"e-{next(_ids)}",
        customer_id=customer_id,
        touchpoint=touchpoint or f"{channel}-0042",
        channel=channel,  # type: ignore[arg-type]
        type=type_,  # type: ignore[arg-type]
        occurred_at=at,
        attributes=attributes,
    )


def withdrawal(at: datetime, amount: int = 200, receipt: bool = False, **kw: Any) -> Event:
    return event(
        "request",
        at=at,
        request="cash_withdrawal",
        amount=amount,
        currency="EUR",
        receipt=receipt,
        **kw,
    )


def canonical(profile: Profile) -> Any:
    """The profile as plain data with floats rounded, for order-independence comparisons.

    Decayed counts are sums of floats, which are equal up to rounding whatever the order.
    """
    return _round(profile.model_dump(mode="json"))


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.9g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: _round(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_round(item) for item in value]
    return value


# ---- hypothesis strategies: any mix of event types a customer can produce ----

_CHANNELS = ["atm", "web", "mobile_app", "call_center", "branch", "email", "sms", "chat"]
_offsets = st.integers(min_value=0, max_value=200 * 24 * 3600)  # seconds within ~200 days


@st.composite
def customer_events(
    draw: st.DrawFn,
    customer_id: str = "cust-1",
    consent_purposes: tuple[str, ...] = ("service", "marketing"),
) -> Event:
    """Any event a customer can produce. Profiling consent is left out unless asked for: its
    revocation wipes learning on purpose, the fold's one documented order dependence."""
    kind = draw(
        st.sampled_from(
            [
                "request",
                "request",
                "request",
                "contact",
                "complaint_opened",
                "complaint_resolved",
                "feedback",
                "preference_stated",
                "consent_changed",
                "outcome",
                "incident_opened",
                "incident_resolved",
                "action_exposed",
            ]
        )
    )
    at = T0 + timedelta(seconds=draw(_offsets))
    channel = draw(st.sampled_from(_CHANNELS))
    attributes: dict[str, Any]
    if kind == "request":
        attributes = {
            "request": draw(st.sampled_from(["cash_withdrawal", "top_up", "bill_enquiry"])),
            "amount": draw(st.sampled_from([50, 100, 200])),
            "currency": "EUR",
            "receipt": draw(st.booleans()),
        }
    elif kind == "contact":
        attributes = {}
    elif kind in ("complaint_opened", "complaint_resolved"):
        attributes = {"case_id": draw(st.sampled_from(["case-1", "case-2", "case-3"]))}
    elif kind == "feedback":
        attributes = {"score": draw(st.integers(0, 10))}
    elif kind == "preference_stated":
        attributes = draw(
            st.sampled_from(
                [
                    {"key": "contact_channel", "value": "sms"},
                    {"key": "contact_channel", "value": "email"},
                    {"key": "receipt", "value": True},
                    {"key": "receipt", "value": False},
                ]
            )
        )
    elif kind == "consent_changed":
        attributes = {
            "purpose": draw(st.sampled_from(consent_purposes)),
            "channel": draw(st.sampled_from(["email", "sms", None])),
            "status": draw(st.sampled_from(["granted", "denied", "revoked"])),
        }
    elif kind in ("incident_opened", "incident_resolved"):
        attributes = {
            "case_id": draw(st.sampled_from(["inc-1", "inc-2"])),
            "kind": draw(st.sampled_from(["failed_payment", "outage"])),
        }
    elif kind == "action_exposed":
        attributes = {
            "decision_id": f"d-{draw(st.integers(0, 5))}",
            "action_id": draw(st.sampled_from(["savings_plan", "travel_insurance"])),
            "delivery_channel": draw(st.sampled_from(["email", "sms", "web"])),
            "purpose": draw(st.sampled_from(["service", "marketing"])),
        }
    elif draw(st.booleans()):
        attributes = {
            "decision_id": f"d-{draw(st.integers(0, 5))}",
            "target": draw(st.sampled_from(["savings_plan", "travel_insurance"])),
            "kind": "action",
            "outcome": draw(st.sampled_from(["accepted", "declined", "ignored", "converted"])),
            "value": draw(st.sampled_from([None, 10.0, 250.0])),
        }
    else:
        attributes = {
            "decision_id": f"d-{draw(st.integers(0, 5))}",
            "target": "default:cash_withdrawal",
            "outcome": draw(st.sampled_from(["accepted", "declined", "ignored"])),
            "request": "cash_withdrawal",
            "habit_channel": "atm",
            "signature": draw(st.sampled_from(["amount=200;currency='EUR';receipt=False", "x"])),
        }
    return Event(
        event_id=f"h-{draw(st.integers(0, 10**9))}",
        customer_id=customer_id,
        touchpoint=f"{channel}-0042",
        channel=channel,  # type: ignore[arg-type]
        type=kind,  # type: ignore[arg-type]
        occurred_at=at,
        attributes=attributes,
    )


def event_lists(
    max_size: int = 40, consent_purposes: tuple[str, ...] = ("service", "marketing")
) -> st.SearchStrategy[list[Event]]:
    return st.lists(
        customer_events(consent_purposes=consent_purposes),
        min_size=1,
        max_size=max_size,
        unique_by=lambda e: e.event_id,
    )
