from typing import Annotated

from fastapi import APIRouter

from api.auth import require
from api.deps import Now, Store
from api.params import CustomerIdPath, Instant
from api.params import as_of as as_of_query
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
    customer_id: CustomerIdPath,
    store: Store,
    now: Now,
    as_of: Annotated[Instant | None, as_of_query("Decay learned counts to this time.")] = None,
) -> CustomerView:
    """Stated and learned preferences, habits and their reasons. 404 for an unknown customer."""
    return customer_view(store, customer_id, at=as_of or now)


@router.put(
    "/{customer_id}/preferences",
    response_model=CustomerView,
    dependencies=[require(Scope.CUSTOMERS_WRITE)],
)
def put_preferences(
    customer_id: CustomerIdPath, update: PreferencesUpdate, store: Store, now: Now
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
