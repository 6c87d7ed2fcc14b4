"""Bounds on what one event or one decision may carry, checked before the engine sees it.

The body-size limit (`api.limits`) bounds a request; these bound its parts, so that one event
cannot hold 10,000 attribute keys or a 50 MB string, a decision's `context` (logged with the
decision) stays small, and no string carries a NUL byte (which some stores and logs truncate):

* an event: at most `max_identities` identifiers, `max_attribute_keys` attribute keys, nesting
  `max_depth` deep, strings of `max_string_length` characters, `max_attributes_bytes` of JSON;
  its time a string (ISO 8601 with an offset), no more than `max_event_ahead` in the future
  and `max_event_age` in the past;
* a decision's context: at most `max_context_keys` keys, each value a scalar (string, number,
  boolean, null) or a short list of scalars, strings of `max_string_length`, and
  `max_context_bytes` of JSON.

Each check answers the field at fault and the reason, in the API's error form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

#: A violation: the field (dotted, below the event or the body) and why.
Violation = tuple[str, str]


@dataclass(frozen=True, slots=True)
class InputBounds:
    max_identities: int = 8
    max_attribute_keys: int = 64
    max_depth: int = 4
    max_string_length: int = 1024
    max_attributes_bytes: int = 8 * 1024
    max_event_ahead: timedelta = timedelta(days=1)
    max_event_age: timedelta = timedelta(days=3650)
    max_context_keys: int = 16
    max_context_list: int = 16
    max_context_bytes: int = 2 * 1024


def event_violation(raw: dict[str, Any], bounds: InputBounds, now: datetime) -> Violation | None:
    """The first bound a raw event (as posted) breaks, or None."""
    identities = raw.get("identities")
    if (
        isinstance(identities, list)
        and len(identities) + ("identity" in raw) > bounds.max_identities
    ):
        return "identities", f"at most {bounds.max_identities} identifiers per event"
    found = _strings_violation(raw, bounds.max_string_length, "")
    if found is not None:
        return found
    attributes = raw.get("attributes")
    if isinstance(attributes, dict):
        if len(attributes) > bounds.max_attribute_keys:
            return "attributes", f"at most {bounds.max_attribute_keys} keys"
        if _depth(attributes) > bounds.max_depth:
            return "attributes", f"nested at most {bounds.max_depth} deep"
        if len(json.dumps(attributes, default=str)) > bounds.max_attributes_bytes:
            return "attributes", f"at most {bounds.max_attributes_bytes} bytes of JSON"
    return _time_violation(raw.get("occurred_at"), bounds, now)


def context_violation(context: dict[str, Any], bounds: InputBounds) -> Violation | None:
    """The first bound a decision's context breaks, or None."""
    if len(context) > bounds.max_context_keys:
        return "context", f"at most {bounds.max_context_keys} keys"
    for key, value in context.items():
        field = f"context.{key}"
        if isinstance(value, list):
            if len(value) > bounds.max_context_list or not all(map(_scalar, value)):
                return field, f"a scalar or a list of at most {bounds.max_context_list} scalars"
        elif not _scalar(value):
            return field, "a scalar (string, number, boolean or null) or a list of scalars"
    found = _strings_violation(context, bounds.max_string_length, "context")
    if found is not None:
        return found
    if len(json.dumps(context, default=str)) > bounds.max_context_bytes:
        return "context", f"at most {bounds.max_context_bytes} bytes of JSON"
    return None


def _time_violation(value: Any, bounds: InputBounds, now: datetime) -> Violation | None:
    if value is None:
        return None  # the model says it is required
    if not isinstance(value, str):
        return "occurred_at", "an ISO 8601 time with a UTC offset, e.g. 2026-01-01T00:00:00Z"
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # the model names the format
    if at.tzinfo is None:
        return None  # the model refuses a naive time
    if at > now + bounds.max_event_ahead:
        return "occurred_at", f"more than {_days(bounds.max_event_ahead)} in the future"
    if at < now - bounds.max_event_age:
        return "occurred_at", f"more than {_days(bounds.max_event_age)} in the past"
    return None


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level + 1)
    return level


def _strings_violation(value: Any, limit: int, field: str) -> Violation | None:
    """The first string (key or value) too long or holding a NUL, walked iteratively (the
    body-size limit bounds the walk)."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "body", "must not contain a NUL character"
            if len(item) > limit:
                return path or "body", f"at most {limit} characters"
        elif isinstance(item, dict):
            for key, nested in item.items():
                child = f"{path}.{key}" if path else str(key)
                if "\x00" in key or len(key) > limit:
                    return child, f"a key of at most {limit} characters, without NUL"
                stack.append((child, nested))
        elif isinstance(item, list):
            stack.extend((f"{path}.{index}", nested) for index, nested in enumerate(item))
    return None
