from fastapi import APIRouter

from api.auth import require
from api.deps import IdentitySecret, Now, Store
from api.schemas import DecisionIn, DecisionOut
from feature_store.credentials import Scope
from feature_store.serving import decide_for

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


@router.post("", response_model=DecisionOut, dependencies=[require(Scope.DECISIONS)])
def post_decision(
    question: DecisionIn, store: Store, secret: IdentitySecret, now: Now
) -> DecisionOut:
    """Personalised defaults and contact channel for this customer at this touchpoint.

    Never fails for store trouble: answers `degraded: true` with nothing personal instead.
    """
    identity = question.identity.hashed(secret) if question.identity else None
    decision = decide_for(store, question.as_request(), at=question.at or now, identity=identity)
    return DecisionOut.of(decision)
