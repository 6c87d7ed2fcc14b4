"""Path and query parameters checked as their body counterparts are, so that a bad one is a
422 naming it, never an error deeper in (a customer id with a space used to reach the fold and
come back as a 500).

One grammar for ids: letters, digits and `. _ : @ -`, at most 128 characters (an experiment id:
lower case, at most 64), the same in paths as in bodies (`engine.events.Identifier`).
Times are ISO 8601 with a UTC offset; a time without one, or a bare number (which pydantic would
read as seconds since 1970), is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

#: The id grammar of `engine.events.Identifier` and `experiments.definitions.ExperimentId`.
ID_PATTERN = r"^[A-Za-z0-9._:@\-]+$"
EXPERIMENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
#: Times a query may name: a review or a view before 2000 or after 2100 is a typo.
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100


def _iso_text(value: Any) -> Any:
    if isinstance(value, datetime):  # built in Python, not parsed from the wire
        return value
    if not isinstance(value, str) or value.lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be an ISO 8601 time with a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return value


def _plausible(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must lie between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_plausible)]

CustomerIdPath = Annotated[
    str, Path(min_length=1, max_length=128, pattern=ID_PATTERN, description="A customer id.")
]
DecisionIdPath = Annotated[
    str, Path(min_length=1, max_length=128, pattern=ID_PATTERN, description="A decision id.")
]
ExperimentIdPath = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=EXPERIMENT_ID_PATTERN, description="An experiment."),
]


#: What `Instant` accepts, for the OpenAPI document: years 2000 to 2100, a time, an offset.
INSTANT_PATTERN = (
    r"^(20[0-9]{2}|2100)-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)


def as_of(description: str) -> Any:
    """The `as_of` query parameter: an ISO 8601 time with a UTC offset, or absent (now)."""
    return Query(
        description=f"{description} ISO 8601 with a UTC offset.",
        json_schema_extra={"pattern": INSTANT_PATTERN},
    )
