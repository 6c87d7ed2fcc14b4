from fastapi import APIRouter

from api.deps import Store
from api.schemas import EventBatch, EventBatchResult, batch_result, parse_events
from feature_store.serving import ingest

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", response_model=EventBatchResult)
def post_events(batch: EventBatch, store: Store) -> EventBatchResult:
    """Log and learn from 1 to 1,000 events. Bad events are rejected alone, with the reason.

    Idempotent by `event_id`: a repeated event is reported `duplicate` and changes nothing.
    """
    valid, rejections = parse_events(batch.events)
    return batch_result(valid, rejections, ingest(store, valid))
