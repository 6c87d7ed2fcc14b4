"""The customers the store holds, a page at a time (the operator console's customer list)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import require
from api.deps import Store
from api.params import ID_PATTERN
from feature_store.base import OnlineStore
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/customers", tags=["customers"])


class CustomerPage(BaseModel):
    customers: list[str] = Field(description="Customer ids, in id order.")
    next_after: str | None = Field(
        description="The `after` of the next page; null on the last page."
    )


def customer_page(store: OnlineStore, after: str | None, limit: int) -> CustomerPage:
    """One page of customer ids; one more is read to know whether a next page exists."""
    found = store.list_customers(after, limit + 1)
    page = found[:limit]
    return CustomerPage(customers=page, next_after=page[-1] if len(found) > limit else None)


@router.get("", response_model=CustomerPage, dependencies=[require(Scope.CUSTOMERS_READ)])
def get_customers(
    store: Store,
    after: Annotated[
        str | None,
        Query(max_length=128, pattern=ID_PATTERN, description="List ids after this one."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Customers per page.")] = 50,
) -> CustomerPage:
    """Customer ids with events in the online store, in id order, `limit` at a time (no
    personal data: ids only). 501 if the store cannot list its customers."""
    return customer_page(store, after, limit)
