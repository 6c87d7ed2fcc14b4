from fastapi import APIRouter

from api.deps import Now, Store
from api.schemas import DecisionOut
from engine.decision import DecisionRequest
from feature_store.serving import decide_for

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


@router.post("", response_model=DecisionOut)
def post_decision(request: DecisionRequest, store: Store, now: Now) -> DecisionOut:
    """Personalised defaults and contact channel for this customer at this touchpoint.

    Never fails for store trouble: answers `degraded: true` with nothing personal instead.
    """
    return DecisionOut.of(decide_for(store, request, at=request.at or now))
