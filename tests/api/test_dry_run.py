"""`POST /v1/decisions` with `"dry_run": true` answers the decision the touchpoint would get and
leaves no trace: nothing logged, no exposure counted toward caps or cooldowns."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx

from api.settings import Settings
from feature_store.factory import open_store
from tests.waiting import wait_until

QUESTION = {"customer_id": "cust-dry", "touchpoint": "app-ios", "channel": "mobile_app"}


def test_a_dry_run_answers_like_a_decision_and_writes_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    at = datetime.now(UTC) - timedelta(days=1)
    events = [
        {
            "event_id": f"dry-{week}",
            "customer_id": "cust-dry",
            "touchpoint": "atm-0042",
            "channel": "atm",
            "type": "request",
            "occurred_at": (at - timedelta(weeks=week)).isoformat(),
            "attributes": {"request": "cash_withdrawal", "amount": 200, "currency": "EUR"},
        }
        for week in range(6)
    ]
    assert client.post("/v1/events", json={"events": events}).json()["accepted"] == 6
    with closing(open_store(settings.store, settings.engine)) as store:
        before = store.export_customer("cust-dry")
        logs_before = {table: store.read_log(table, 0, 10_000).next_after for table in
                       ("events", "decisions")}  # fmt: skip

    dry = client.post("/v1/decisions", json={**QUESTION, "dry_run": True})
    real = client.post("/v1/decisions", json=QUESTION)

    assert dry.status_code == real.status_code == 200
    dry_answer, real_answer = dry.json(), real.json()
    assert dry_answer["decision_id"].startswith("dry_")
    assert [a["id"] for a in dry_answer["actions"]] == [a["id"] for a in real_answer["actions"]]
    assert client.get(f"/v1/decisions/{dry_answer['decision_id']}").status_code == 404
    with closing(open_store(settings.store, settings.engine)) as store:
        after_dry = store.export_customer("cust-dry")
        assert before is not None
        assert after_dry is not None
        # The real decision came after: only it may have changed the store.
        real_id = real_answer["decision_id"]
        assert all(d.decision_id == real_id for d in after_dry.decisions)

        def logged() -> list[str]:
            page = store.read_log("decisions", logs_before["decisions"], 10_000)
            return [record.decision().decision_id for record in page.records]

        # The server's store writes a decision's log entry within its loss window (1 s).
        wait_until(lambda: bool(logged()), what="the real decision's log entry")
        assert logged() == [real_id]
