from fastapi import APIRouter, Request

from api.auth import caller_grants, require
from api.deps import Bounds, IdentitySecret, Now, Store
from api.metrics import EVENTS
from api.schemas import EventBatch, EventBatchResult, EventResult, batch_result, parse_event
from api.serving import PendingEvent, ingest, route_to_customers
from engine.events import EventType
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/events", tags=["events"])

#: Event types that say what the customer stated or allowed need the scope the routes that
#: change them need (PUT /v1/customers/{id}/preferences and /consents): an `events:write` key
#: must not grant itself a customer's marketing consent.
EVENT_TYPE_SCOPES: dict[EventType, Scope] = {
    EventType.CONSENT_CHANGED: Scope.CUSTOMERS_WRITE,
    EventType.PREFERENCE_STATED: Scope.CUSTOMERS_WRITE,
}
#: Event types no key may post here, and why: each is recorded by the route that checks it.
REFUSED_EVENT_TYPES: dict[EventType, str] = {
    EventType.OUTCOME: "outcomes are recorded through POST /v1/outcomes, which checks the "
    "decision and the item",
    EventType.ACTION_EXPOSED: "exposures are recorded by the decision that returned the action",
}


@router.post("", response_model=EventBatchResult, dependencies=[require(Scope.EVENTS_WRITE)])
def post_events(
    batch: EventBatch,
    request: Request,
    store: Store,
    secret: IdentitySecret,
    now: Now,
    bounds: Bounds,
) -> EventBatchResult:
    """Log and learn from 1 to 1,000 events. Bad events are rejected alone, with the reason.

    Idempotent by `event_id`: a repeated event is reported `duplicate` and changes nothing.
    An event may name its customer by `identity` instead of `customer_id`; identifiers it
    carries together are linked to one customer. `consent_changed` and `preference_stated`
    events need the scope `customers:write` as well; `outcome` and `action_exposed` events are
    refused here (see POST /v1/outcomes and POST /v1/decisions).
    """
    parsed = [screened(parse_event(raw, bounds, now), request) for raw in batch.events]
    pending = [item for item in parsed if isinstance(item, PendingEvent)]
    routed = route_to_customers(store, pending, secret=secret, at=now)
    statuses = ingest(store, [event for event in routed if event is not None])
    result = batch_result(parsed, routed, statuses)
    EVENTS.labels("accepted").inc(result.accepted)
    EVENTS.labels("duplicate").inc(result.duplicates)
    EVENTS.labels("rejected").inc(result.rejected)
    return result


def screened(item: PendingEvent | EventResult, request: Request) -> PendingEvent | EventResult:
    """The event, or its rejection when its type is refused here or needs a scope the caller's
    key lacks."""
    if not isinstance(item, PendingEvent):
        return item
    event = item.event
    reason = REFUSED_EVENT_TYPES.get(event.type)
    needed = EVENT_TYPE_SCOPES.get(event.type)
    if reason is None and needed is not None and not caller_grants(request, needed):
        reason = f"a {event.type.value} event needs the scope {needed.value}"
    if reason is None:
        return item
    return EventResult(
        event_id=event.event_id, status="rejected", error=f"type: {reason}", field="type"
    )
