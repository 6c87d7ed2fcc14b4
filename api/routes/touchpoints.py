from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.auth import require
from api.deps import Store
from api.serving import touchpoint_stats
from engine.touchpoints import TouchpointStats
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/touchpoints", tags=["touchpoints"])


@router.get(
    "",
    response_model=list[TouchpointStats],
    dependencies=[require(Scope.CUSTOMERS_READ)],
    responses={
        200: {
            "headers": {
                "X-Total-Count": {"description": "Touchpoints in all pages.", "schema": {}},
                "Link": {"description": 'The next page, rel="next", if any.', "schema": {}},
            }
        }
    },
)
def get_touchpoints(
    request: Request,
    response: Response,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=1000, description="Touchpoints per page.")] = 100,
    offset: Annotated[int, Query(ge=0, description="Touchpoints to skip (busiest first).")] = 0,
) -> list[TouchpointStats]:
    """Per touchpoint, busiest first: volume, NPS and complaint rate (aggregates: no personal
    data). Paginated: `X-Total-Count` gives the number of touchpoints, `Link` the next page."""
    report = touchpoint_stats(store)
    page = report[offset : offset + limit]
    response.headers["X-Total-Count"] = str(len(report))
    if offset + limit < len(report):
        following = request.url.include_query_params(offset=offset + limit, limit=limit)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return page
