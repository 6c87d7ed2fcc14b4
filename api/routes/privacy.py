from pathlib import Path

from fastapi import APIRouter

from api.auth import require
from api.deps import AppSettings, Now, Store
from api.params import CustomerIdPath
from api.schemas import ConsentsUpdate, ErasureOut
from api.serving import (
    consent_events,
    customer_view,
    erase_customer,
    export_customer,
    ingest,
)
from engine.customer_view import CustomerView
from feature_store.base import CustomerExport
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/customers", tags=["privacy"])


@router.put(
    "/{customer_id}/consents",
    response_model=CustomerView,
    dependencies=[require(Scope.CUSTOMERS_WRITE)],
)
def put_consents(
    customer_id: CustomerIdPath, update: ConsentsUpdate, store: Store, now: Now
) -> CustomerView:
    """Consent per purpose (service, marketing, profiling) and channel: granted, denied or
    revoked. Refusing profiling wipes what was learned implicitly about the customer."""
    events = consent_events(
        customer_id,
        [c.model_dump(mode="json", exclude_none=True) for c in update.consents],
        touchpoint=update.touchpoint,
        channel=update.channel,
        source=update.source,
        at=update.changed_at or now,
    )
    ingest(store, events)
    return customer_view(store, customer_id, at=now)


@router.get(
    "/{customer_id}/export",
    response_model=CustomerExport,
    dependencies=[require(Scope.PRIVACY)],
)
def get_export(customer_id: CustomerIdPath, store: Store, settings: AppSettings) -> CustomerExport:
    """Everything held about the customer (GDPR access), online and, for what was trimmed
    from the online logs once exported, in the offline store. 404 if nothing is, or once
    erased."""
    # Imported here: the offline store needs pandas and pyarrow, which serving does not.
    from feature_store.offline.export import OfflineStore, complete_export

    online = export_customer(store, customer_id)
    return complete_export(online, OfflineStore(Path(settings.offline_root)))


@router.delete("/{customer_id}", response_model=ErasureOut, dependencies=[require(Scope.PRIVACY)])
def delete_customer(customer_id: CustomerIdPath, store: Store) -> ErasureOut:
    """Erase the customer (GDPR erasure). Idempotent; replayed events cannot bring them back.
    404 for an id the store never held: nothing is recorded for it."""
    return ErasureOut(
        customer_id=customer_id, erased=True, removed=erase_customer(store, customer_id)
    )
