"""A typed Python client for touchpoint systems calling Rapport's HTTP API.

It depends on httpx and pydantic only (none of the server's packages), so an ATM switch, a
web back end or a contact-centre desktop can install it alone::

    from rapport_client import RapportClient

    with RapportClient("https://rapport.bank.example", api_key="rk_...") as rapport:
        decision = rapport.decide(customer_id="cust-42", touchpoint="atm-0042", channel="atm")
        usual = decision.defaults[0] if decision.defaults else None
        ...
        rapport.record_outcome(decision.decision_id, usual.id, "accepted")

Answers are pydantic models that keep fields they do not know (the API adds fields freely),
errors raise `RapportError` with the API's error code, the fields at fault and the request id
to quote. Reads and idempotent writes are retried on connection errors and on 503 (honouring
`Retry-After` up to a bound); a decision is retried only when it never reached the server.
"""

from rapport_client.client import RapportClient, RapportError
from rapport_client.models import (
    ChosenAction,
    ContactChannel,
    Decision,
    Default,
    EventBatchResult,
    EventResult,
    Outcome,
    Reasons,
)

__all__ = [
    "ChosenAction",
    "ContactChannel",
    "Decision",
    "Default",
    "EventBatchResult",
    "EventResult",
    "Outcome",
    "RapportClient",
    "RapportError",
    "Reasons",
]
