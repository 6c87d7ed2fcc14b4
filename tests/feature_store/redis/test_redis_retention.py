"""What the Redis store keeps once the offline export has saved its logs: the streams are
trimmed up to the cursor an export run started from (what the previous run saved), and the
customer export reads the rest back offline."""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from feature_store.offline.export import OfflineStore, complete_export
from tests.feature_store.contract import T0, withdrawal
from tests.feature_store.contract_builders import decision
from tests.feature_store.redis.support import RawClient, Target

pytestmark = pytest.mark.redis


def _stream_lengths(raw: RawClient, target: Target, keys: list[str]) -> int:
    return sum(int(raw.xlen(key)) for key in keys if raw.exists(key))


def test_the_export_trims_the_online_logs_and_the_customer_export_still_has_everything(
    target: Target, raw: RawClient, tmp_path: Path
) -> None:
    # A customer list capped at 5 events, 12 events: the online export alone has the last 5.
    events = [withdrawal(f"e-{i}", at=T0 + timedelta(minutes=i)) for i in range(12)]
    with closing(target.store(event_log_cap=5)) as store:
        store.apply_events(events[:8])
        store.log_decision(decision("dec-1"))
        offline = OfflineStore(tmp_path / "offline")
        offline.export(store)
        shard = store.keys.customer_log_shard("cust-1")
        assert _stream_lengths(raw, target, [shard.events, shard.decisions]) == 9  # one run
        offline.export(store)  # acknowledges what the first run saved: trimmed

        shard = store.keys.customer_log_shard("cust-1")
        assert _stream_lengths(raw, target, [shard.events, shard.decisions]) == 0
        assert store.read_log("events", 0, 100).records == []

        # One copy online until exported, none after: the customer's list was emptied too.
        keys = store.keys.customer("cust-1")
        assert raw.exists(keys.events, keys.event_log, keys.decision_log) == 0
        assert store.customer_events("cust-1") == []

        store.apply_events(events[8:])  # after the export: online only, until the next one
        online = store.export_customer("cust-1")
        assert online is not None
        assert [e.event_id for e in online.events] == [f"e-{i}" for i in range(8, 12)]

        export = complete_export(online, offline)
        assert export.events == events
        assert [d.decision_id for d in export.decisions] == ["dec-1"]
        assert export.profile == online.profile

        # The next export reads on from its cursor: the new events, and nothing twice.
        report = offline.export(store)
        assert report.tables["events"].rows_written == 4
        assert list(offline.read("events")["event_id"]) == [e.event_id for e in events]
        assert _stream_lengths(raw, target, [shard.events]) == 4  # until the next run
        offline.export(store)
        assert _stream_lengths(raw, target, [shard.events]) == 0
        assert complete_export(store.export_customer("cust-1"), offline).events == events


def test_the_log_trimmed_up_to_a_cursor_keeps_what_follows(target: Target) -> None:
    with closing(target.store()) as store:
        store.apply_events([withdrawal(f"e-{i}", customer_id=f"cust-{i % 3}") for i in range(9)])
        page = store.read_log("events", 0, 4)
        store.acknowledge_export("events", page.next_after)

        rest = store.read_log("events", page.next_after, 100).records
        assert sorted(r.event().event_id for r in rest) == sorted(
            f"e-{i}" for i in range(9) if f"e-{i}" not in {r.event().event_id for r in page.records}
        )
        assert len(rest) == 5
        assert store.read_log("events", 0, 100).records == rest


def test_past_the_retention_setting_the_log_is_trimmed_without_an_export(
    target: Target, raw: RawClient
) -> None:
    # Approximate trimming (whole stream nodes of 100 entries): bounded, not exact.
    events = [withdrawal(f"e-{i}", at=T0 + timedelta(minutes=i)) for i in range(1000)]
    with closing(target.store(log_retention_entries=100)) as store:
        for first in range(0, len(events), 50):
            store.apply_events(events[first : first + 50])
        shard = store.keys.customer_log_shard("cust-1")
        assert 100 <= raw.xlen(shard.events) <= 300
        records = store.read_log("events", 0, 1000).records
        assert [r.event().event_id for r in records] == [
            e.event_id for e in events[-len(records) :]
        ]
