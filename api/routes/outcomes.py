from fastapi import APIRouter

from api.auth import require
from api.deps import Now, Store
from api.schemas import OutcomeIn, OutcomeOut
from api.serving import record_outcome
from feature_store.base import AppendStatus
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/outcomes", tags=["outcomes"])


# A touchpoint that asks for decisions reports their outcomes: the same scope covers both.
@router.post("", response_model=OutcomeOut, dependencies=[require(Scope.DECISIONS)])
def post_outcome(outcome: OutcomeIn, store: Store, now: Now) -> OutcomeOut:
    """The customer's answer to a default of a decision; it teaches the profile."""
    status = record_outcome(
        store,
        outcome.decision_id,
        outcome.id,
        outcome.outcome,
        at=outcome.at or now,
        value=outcome.value,
    )
    return OutcomeOut(
        decision_id=outcome.decision_id,
        id=outcome.id,
        outcome=outcome.outcome,
        status="duplicate" if status is AppendStatus.DUPLICATE else "accepted",
        recorded=status is not AppendStatus.DUPLICATE,
    )
