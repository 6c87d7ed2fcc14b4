"""What every console page depends on: the signed-in operator with the page's scope, the
API's store and the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request

from api.console.session import MissingConsoleScope, Operator, current_operator
from api.console.state import api_state
from api.params import ID_PATTERN
from feature_store.base import OnlineStore
from feature_store.credentials import Scope

CustomerId = Annotated[str, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]


def operator_with(scope: Scope) -> Any:
    """A page dependency: the signed-in operator, whose key must grant `scope`."""

    def dependency(request: Request) -> Operator:
        operator = current_operator(request)
        if not operator.grants(scope):
            raise MissingConsoleScope(scope)
        return operator

    return Depends(dependency)


Reader = Annotated[Operator, operator_with(Scope.CUSTOMERS_READ)]
Decider = Annotated[Operator, operator_with(Scope.DECISIONS)]
Experimenter = Annotated[Operator, operator_with(Scope.EXPERIMENTS)]
Admin = Annotated[Operator, operator_with(Scope.ADMIN)]
Csrf = Annotated[str, Form(max_length=128)]


def console_store(request: Request) -> OnlineStore:
    store: OnlineStore = api_state(request).store
    return store


def now() -> datetime:
    return datetime.now(UTC)
