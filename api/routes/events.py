from fastapi import APIRouter

from api.auth import require
from api.deps import IdentitySecret, Now, Store
from api.schemas import EventBatch, EventBatchResult, batch_result, parse_event
from api.serving import PendingEvent, ingest, route_to_customers
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", response_model=EventBatchResult, dependencies=[require(Scope.EVENTS_WRITE)])
def post_events(
    batch: EventBatch, store: Store, secret: IdentitySecret, now: Now
) -> EventBatchResult:
    """Log and learn from 1 to 1,000 events. Bad events are rejected alone, with the reason.

    Idempotent by `event_id`: a repeated event is reported `duplicate` and changes nothing.
    An event may name its customer by `identity` instead of `customer_id`; identifiers it
    carries together are linked to one customer.
    """
    parsed = [parse_event(raw) for raw in batch.events]
    pending = [item for item in parsed if isinstance(item, PendingEvent)]
    routed = route_to_customers(store, pending, secret=secret, at=now)
    statuses = ingest(store, [event for event in routed if event is not None])
    return batch_result(parsed, routed, statuses)
