from fastapi import APIRouter

from api.auth import require
from api.deps import IdentitySecret, Now, Store
from api.schemas import LinkRequest
from api.serving import link_identities
from feature_store.base import IdentityLink
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/identities", tags=["identities"])


@router.post("/link", response_model=IdentityLink, dependencies=[require(Scope.CUSTOMERS_WRITE)])
def post_link(link: LinkRequest, store: Store, secret: IdentitySecret, now: Now) -> IdentityLink:
    """Link identifiers (card, IBAN, email, phone, device, CRM id) to one customer.

    Customers the identifiers already belonged to are merged into one: the named customer, or
    else the smallest id among them. Their histories combine through the fold.
    """
    return link_identities(store, link.identities, link.customer_id, secret=secret, at=now)
