"""Columnar decoding gives the very events validation gives, and checks each file's schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from engine.events import Event
from feature_store.offline.columnar import (
    SCHEMA_VERSION_KEY,
    UnsupportedSchema,
    event_histories,
    events_table,
    read_events,
    schema_version,
    with_schema_version,
)
from feature_store.offline.replay import events_from_frame
from training.simulation.population import PopulationSpec, iter_customer_histories

START = datetime(2026, 1, 1, tzinfo=UTC)


def population_events(customers: int = 60) -> list[Event]:
    spec = PopulationSpec(customers=customers, seed=11, start=START, days=120)
    return [event for history in iter_customer_histories(spec) for event in history.events]


def frame_of(events: list[Event]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "customer_id": [e.customer_id for e in events],
            "occurred_at": pd.to_datetime([e.occurred_at for e in events], utc=True),
            "type": [e.type.value for e in events],
            "channel": [e.channel.value for e in events],
            "touchpoint": [e.touchpoint for e in events],
            "attributes": [json.dumps(e.attributes, default=str) for e in events],
        }
    )


def test_decoded_events_equal_validated_events_with_their_typed_attributes() -> None:
    events = population_events()
    assert len({e.type for e in events}) >= 5  # several attribute models are exercised
    frame = frame_of(events)
    validated = {e.event_id: e for e in events_from_frame(frame)}
    decoded = [e for _, history in event_histories(events_table(frame)) for e in history]
    assert len(decoded) == len(validated)
    for event in decoded:
        expected = validated[event.event_id]
        assert event == expected
        assert event.typed == expected.typed
        assert type(event.typed) is type(expected.typed)
        assert event.model_dump() == expected.model_dump()


def test_histories_are_time_ordered_per_customer_and_a_resent_id_counts_once() -> None:
    events = population_events(20)
    resent = events[5]
    frame = frame_of([*reversed(events), resent])
    histories = dict(event_histories(events_table(frame)))
    assert list(histories) == sorted(histories)
    for customer_id, history in histories.items():
        keys = [(e.occurred_at, e.event_id) for e in history]
        assert keys == sorted(keys)
        assert len({e.event_id for e in history}) == len(history)
        assert all(e.customer_id == customer_id for e in history)
    assert sum(len(h) for h in histories.values()) == len({e.event_id for e in events})


def test_only_the_customers_asked_for_are_decoded() -> None:
    events = population_events(10)
    wanted = {events[0].customer_id}
    assert [c for c, _ in event_histories(events_table(frame_of(events)), wanted)] == [
        events[0].customer_id
    ]


def test_a_row_that_does_not_validate_raises_as_validation_does() -> None:
    events = population_events(3)
    frame = frame_of(events)
    frame.loc[0, "channel"] = "carrier_pigeon"
    with pytest.raises(ValidationError):
        for _ in event_histories(events_table(frame)):
            pass


def write(path: Path, frame: pd.DataFrame, version: bytes | None) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({SCHEMA_VERSION_KEY: version} if version else None)
    pq.write_table(table, path)
    return path


def test_files_without_a_version_are_version_1_and_unknown_versions_are_refused(
    tmp_path: Path,
) -> None:
    frame = frame_of(population_events(4))
    old = write(tmp_path / "old.parquet", frame, None)
    current = tmp_path / "current.parquet"
    pq.write_table(with_schema_version(events_table(frame)), current)
    future = write(tmp_path / "future.parquet", frame, b"99")
    assert schema_version(old) == 1
    assert schema_version(current) == 1
    assert schema_version(future) == 99
    assert read_events([old, current]).num_rows == 2 * len(frame)
    with pytest.raises(UnsupportedSchema, match="schema version 99"):
        read_events([old, future])


def test_timestamps_keep_their_microseconds() -> None:
    events = population_events(2)
    frame = frame_of(events)
    at = START + timedelta(microseconds=123_457)
    frame.loc[0, "occurred_at"] = pd.Timestamp(at)
    decoded = [e for _, h in event_histories(events_table(frame)) for e in h]
    assert at in {e.occurred_at for e in decoded}
