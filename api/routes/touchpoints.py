from fastapi import APIRouter

from api.auth import require
from api.deps import Store
from api.serving import touchpoint_stats
from engine.touchpoints import TouchpointStats
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/touchpoints", tags=["touchpoints"])


@router.get("", response_model=list[TouchpointStats], dependencies=[require(Scope.CUSTOMERS_READ)])
def get_touchpoints(store: Store) -> list[TouchpointStats]:
    """Per touchpoint: volume, NPS and complaint rate (aggregates: no personal data)."""
    return touchpoint_stats(store)
