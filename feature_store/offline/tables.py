"""The tables of the offline store: their Parquet schemas, and log entries turned into rows.

`events` and `decisions` are the online logs; `outcomes` are the events of type `outcome`, with
the keys that join them to their decisions as columns. Times are `timestamp[us, UTC]`; nested
values (attributes, the actions and defaults of a decision, its whole logged body) are JSON
strings, so that every engine reads every column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa

from feature_store.base import LogRecord

OfflineTable = Literal["events", "decisions", "outcomes"]
TABLES: tuple[OfflineTable, ...] = get_args(OfflineTable)

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_MICROSECONDS_PER_DAY = 86_400_000_000

SCHEMAS: dict[OfflineTable, Any] = {
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("customer_id", pa.string()),
            ("occurred_at", _TIMESTAMP),
            ("type", pa.string()),
            ("channel", pa.string()),
            ("touchpoint", pa.string()),
            ("attributes", pa.string()),  # JSON object
            ("status", pa.string()),  # as logged online: accepted or too_late
            ("seq", pa.int64()),
        ]
    ),
    "outcomes": pa.schema(
        [
            ("event_id", pa.string()),
            ("customer_id", pa.string()),
            ("occurred_at", _TIMESTAMP),
            ("decision_id", pa.string()),
            ("target", pa.string()),  # the item of the decision: an action id or default:<request>
            ("outcome", pa.string()),  # accepted, declined, ignored, converted
            ("kind", pa.string()),  # action or default
            ("value", pa.float64()),  # EUR, for a conversion
            ("segment", pa.string()),
            ("channel", pa.string()),
            ("touchpoint", pa.string()),
            ("attributes", pa.string()),  # JSON object, everything above included
            ("status", pa.string()),
            ("seq", pa.int64()),
        ]
    ),
    "decisions": pa.schema(
        [
            ("decision_id", pa.string()),
            ("customer_id", pa.string()),
            ("decided_at", _TIMESTAMP),
            ("touchpoint", pa.string()),
            ("touchpoint_channel", pa.string()),
            ("known_customer", pa.bool_()),
            ("degraded", pa.bool_()),
            ("segment", pa.string()),
            ("policy_version", pa.string()),
            ("model_version", pa.string()),
            ("catalogue_version", pa.string()),
            ("exploration", pa.string()),
            ("actions", pa.string()),  # JSON list: id, kind, rank, propensity, score, channel
            ("defaults", pa.string()),  # JSON list: id, request, channel, confidence, signature
            ("body", pa.string()),  # the logged Decision, JSON
            ("seq", pa.int64()),
        ]
    ),
}


#: Columns by name, the UTC day (YYYY-MM-DD) of each row, and each row's log seq.
Columns = tuple[dict[str, list[Any]], np.ndarray, np.ndarray]
#: A log entry's JSON body, decoded.
Body = dict[str, Any]


def _days_and_seqs(records: Sequence[LogRecord]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    at_us = np.fromiter((r.at_us for r in records), dtype=np.int64, count=len(records))
    days = (at_us // _MICROSECONDS_PER_DAY).astype("datetime64[D]").astype(str)
    seqs = np.fromiter((r.seq for r in records), dtype=np.int64, count=len(records))
    return days, seqs, at_us.tolist()


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _event_columns(records: Sequence[LogRecord], bodies: Sequence[Body]) -> Columns:
    days, seqs, at_us = _days_and_seqs(records)
    columns: dict[str, list[Any]] = {
        "event_id": [b["event_id"] for b in bodies],
        "customer_id": [r.customer_id for r in records],
        "occurred_at": at_us,
        "type": [b["type"] for b in bodies],
        "channel": [b["channel"] for b in bodies],
        "touchpoint": [b["touchpoint"] for b in bodies],
        "attributes": [_compact(b["attributes"]) for b in bodies],
        "status": [r.status for r in records],
        "seq": seqs.tolist(),
    }
    return columns, days, seqs


def _outcome_columns(records: Sequence[LogRecord], bodies: Sequence[Body]) -> Columns:
    outcomes = [
        (r, body) for r, body in zip(records, bodies, strict=True) if body["type"] == "outcome"
    ]
    days, seqs, at_us = _days_and_seqs([r for r, _ in outcomes])
    attributes = [body["attributes"] for _, body in outcomes]
    columns: dict[str, list[Any]] = {
        "event_id": [body["event_id"] for _, body in outcomes],
        "customer_id": [r.customer_id for r, _ in outcomes],
        "occurred_at": at_us,
        **{
            name: [a.get(name) for a in attributes]
            for name in ("decision_id", "target", "outcome", "segment")
        },
        "kind": [a.get("kind", "default") for a in attributes],
        "value": [_number(a.get("value")) for a in attributes],
        "channel": [body["channel"] for _, body in outcomes],
        "touchpoint": [body["touchpoint"] for _, body in outcomes],
        "attributes": [_compact(a) for a in attributes],
        "status": [r.status for r, _ in outcomes],
        "seq": seqs.tolist(),
    }
    return columns, days, seqs


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


_ACTION_KEYS = ("id", "kind", "rank", "propensity", "score", "channel")
_DEFAULT_KEYS = ("id", "request", "channel", "confidence", "signature")


def _decision_columns(records: Sequence[LogRecord], bodies: Sequence[Body]) -> Columns:
    days, seqs, at_us = _days_and_seqs(records)
    columns: dict[str, list[Any]] = {
        "decision_id": [b["decision_id"] for b in bodies],
        "customer_id": [r.customer_id for r in records],
        "decided_at": at_us,
        **{
            name: [b.get(name) for b in bodies]
            for name in (
                "touchpoint",
                "touchpoint_channel",
                "known_customer",
                "degraded",
                "segment",
                "policy_version",
                "model_version",
                "catalogue_version",
                "exploration",
            )
        },
        "actions": [_compact(_pick(b.get("actions", []), _ACTION_KEYS)) for b in bodies],
        "defaults": [_compact(_pick(b.get("defaults", []), _DEFAULT_KEYS)) for b in bodies],
        "body": [r.body for r in records],
        "seq": seqs.tolist(),
    }
    return columns, days, seqs


def _pick(items: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    return [{key: item.get(key) for key in keys} for item in items]


_COLUMNS: dict[OfflineTable, Callable[[Sequence[LogRecord], Sequence[Body]], Columns]] = {
    "events": _event_columns,
    "outcomes": _outcome_columns,
    "decisions": _decision_columns,
}


def table_rows(
    table: OfflineTable, records: Sequence[LogRecord], bodies: Sequence[Body]
) -> Columns:
    """The rows of `table` that the log entries `records` (with their decoded `bodies`) give:
    one per entry for `events` and `decisions`, one per outcome event for `outcomes`."""
    return _COLUMNS[table](records, bodies)
