from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import require
from api.metrics import exposition
from feature_store.credentials import Scope

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    dependencies=[require(Scope.METRICS)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def get_metrics() -> Response:
    """Prometheus metrics (text exposition) of every worker of this server: requests and their
    latency by route template and status, events by result. No label holds personal data."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
