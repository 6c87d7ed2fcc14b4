"""The console is a sub-application mounted in the API: it reads the API's state."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import State


def api_state(request: Request) -> State:
    """The state of the API app the console is mounted in (store, keys, models, settings)."""
    state: State = request.app.state.api.state
    return state
