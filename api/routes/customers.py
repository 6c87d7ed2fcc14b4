from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import require
from api.deps import Now, Store
from api.schemas import PreferencesUpdate
from api.serving import customer_view, ingest, preference_events
from engine.customer_view import CustomerView
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get(
    "/{customer_id}",
    response_model=CustomerView,
    dependencies=[require(Scope.CUSTOMERS_READ)],
)
def get_customer(
    customer_id: str,
    store: Store,
    now: Now,
    as_of: Annotated[
        datetime | None, Query(description="Decay learned counts to this time.")
    ] = None,
) -> CustomerView:
    """Stated and learned preferences, habits and their reasons. 404 for an unknown customer."""
    return customer_view(store, customer_id, at=as_of or now)


@router.put(
    "/{customer_id}/preferences",
    response_model=CustomerView,
    dependencies=[require(Scope.CUSTOMERS_WRITE)],
)
def put_preferences(
    customer_id: str, update: PreferencesUpdate, store: Store, now: Now
) -> CustomerView:
    """State preferences (they always win over learned ones); answers the customer's view."""
    stated_at = update.stated_at or now
    events = preference_events(
        customer_id,
        update.preferences,
        touchpoint=update.touchpoint,
        channel=update.channel,
        source=update.source,
        at=stated_at,
    )
    ingest(store, events)
    return customer_view(store, customer_id, at=now)
