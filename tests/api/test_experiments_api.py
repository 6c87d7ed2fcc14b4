"""Experiments over HTTP: defining them, decisions that apply and log their variant, weight
changes and stops, the review report, and definitions loaded from YAML at start-up."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.settings import Settings
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from experiments.definitions import InvalidExperiment
from experiments.registry import list_experiments, start_experiments
from feature_store.credentials import Scope
from feature_store.factory import open_experiment_registry
from tests.api.conftest import LiveServer, bearer, create_key
from tests.feature_store.redis_servers import RedisServer

NOW = datetime.now(UTC).replace(microsecond=0)


def definition(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "nba-holdout",
        "hypothesis": "Personalised actions convert more than the holdout.",
        "start": (NOW - timedelta(days=1)).isoformat(),
        "variants": [
            {"name": "holdout", "weight": 1, "personalisation": False},
            {"name": "personalised", "weight": 1, "exploration_epsilon": 0.2},
        ],
    }
    return data | changes


def decide(client: httpx.Client, customer: str, channel: str = "web") -> dict[str, Any]:
    """Ask for a decision and return it as logged (with its experiment exposures)."""
    answer = client.post(
        "/v1/decisions",
        json={"customer_id": customer, "touchpoint": f"{channel}-1", "channel": channel},
    )
    assert answer.status_code == 200, answer.text
    logged = client.get(f"/v1/decisions/{answer.json()['decision_id']}")
    assert logged.status_code == 200, logged.text
    body: dict[str, Any] = logged.json()
    return body


def variant_of(client: httpx.Client, customer: str, channel: str = "web") -> str | None:
    exposures = decide(client, customer, channel)["experiments"]
    assert len(exposures) <= 1
    return exposures[0]["variant"] if exposures else None


def test_an_experiment_is_created_read_and_listed(client: httpx.Client) -> None:
    created = client.post("/v1/experiments", json=definition())

    assert created.status_code == 201, created.text
    assert created.json()["variants"][1]["exploration_epsilon"] == 0.2
    assert client.get("/v1/experiments/nba-holdout").json() == created.json()
    assert [e["id"] for e in client.get("/v1/experiments").json()] == ["nba-holdout"]
    duplicate = client.post("/v1/experiments", json=definition())
    assert duplicate.status_code == 409
    assert duplicate.json()["errors"] == [{"field": "body.id", "reason": "already exists"}]
    missing = client.get("/v1/experiments/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_experiment"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": -3}]},
            "body.variants.1.weight",
        ),
        (
            {"variants": [{"name": "A", "weight": 1}, {"name": "A", "weight": 1}]},
            "body.variants.1.name",
        ),
        (
            {"variants": [{"name": "A", "weight": 1, "actions": ["yacht"]},
                          {"name": "B", "weight": 1}]},
            "body.variants.0.actions.0",
        ),
        ({"start": "yesterday"}, "body.start"),
        ({"colour": "red"}, "body.colour"),
    ],
)  # fmt: skip
def test_an_invalid_definition_is_422_naming_the_field(
    client: httpx.Client, changes: dict[str, Any], field: str
) -> None:
    refused = client.post("/v1/experiments", json=definition(**changes))

    assert refused.status_code == 422, refused.text
    assert field in [error["field"] for error in refused.json()["errors"]]
    assert client.get("/v1/experiments").json() == []


def test_a_customer_gets_one_variant_on_every_channel_and_it_is_logged(
    client: httpx.Client,
) -> None:
    assert client.post("/v1/experiments", json=definition()).status_code == 201

    seen = {
        customer: {variant_of(client, customer, ch) for ch in ("atm", "web", "call_center")}
        for customer in (f"cust-{i}" for i in range(12))
    }

    assert all(len(variants) == 1 for variants in seen.values())
    assert set().union(*seen.values()) == {"holdout", "personalised"}
    anonymous = client.post(
        "/v1/decisions",
        json={"identity": {"type": "email", "value": "x@example.com"},
              "touchpoint": "web-1", "channel": "web"},
    )  # fmt: skip
    assert (
        client.get(f"/v1/decisions/{anonymous.json()['decision_id']}").json()["experiments"] == []
    )


def test_a_weight_change_moves_customers_only_into_the_grown_variant(
    client: httpx.Client,
) -> None:
    client.post("/v1/experiments", json=definition())
    customers = [f"cust-{i}" for i in range(16)]
    before = {c: variant_of(client, c) for c in customers}

    changed = client.put(
        "/v1/experiments/nba-holdout/weights", json={"weights": {"holdout": 0, "personalised": 1}}
    )

    assert changed.status_code == 200, changed.text
    after = {c: variant_of(client, c) for c in customers}
    assert set(before.values()) == {"holdout", "personalised"}
    assert set(after.values()) == {"personalised"}
    wrong = client.put("/v1/experiments/nba-holdout/weights", json={"weights": {"holdout": 1}})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "body.weights"


def test_a_stopped_experiment_no_longer_applies_to_decisions(client: httpx.Client) -> None:
    client.post("/v1/experiments", json=definition())
    assert variant_of(client, "cust-1") is not None

    stopped = client.post("/v1/experiments/nba-holdout/stop")

    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["stop"] is not None
    assert variant_of(client, "cust-1") is None
    assert client.post("/v1/experiments/nope/stop").status_code == 404


def test_the_report_is_served_as_html_and_as_json(client: httpx.Client) -> None:
    client.post("/v1/experiments", json=definition())
    decisions = [decide(client, f"cust-{i}", ch) for i in range(10) for ch in ("web", "atm")]

    page = client.get("/v1/experiments/nba-holdout/report")
    data = client.get("/v1/experiments/nba-holdout/report", params={"format": "json"})

    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "Verdict: keep running" in page.text
    assert "<script" not in page.text
    body = data.json()
    assert body["verdict"]["decision"] == "keep running"
    exposures = {row["variant"]: row["exposures"] for row in body["variants"]}
    assert sum(exposures.values()) == len(decisions) == 20
    assert body["sample_ratio"]["observed_units"].keys() == {"holdout", "personalised"}
    assert client.get("/v1/experiments/nope/report").status_code == 404


def test_experiments_need_the_experiments_scope(settings: Settings, server: LiveServer) -> None:
    teller = create_key(settings, "teller", [Scope.DECISIONS])
    analyst = create_key(settings, "analyst", [Scope.EXPERIMENTS])
    with httpx.Client(base_url=server.url, headers=bearer(teller)) as http:
        assert http.get("/v1/experiments").status_code == 403
        assert http.post("/v1/experiments", json=definition()).status_code == 403
    with httpx.Client(base_url=server.url, headers=bearer(analyst)) as http:
        assert http.post("/v1/experiments", json=definition()).status_code == 201
        assert http.get("/v1/experiments/nba-holdout/report").status_code == 200


YAML = """
experiments:
  - id: from-yaml
    hypothesis: Declared in a file.
    start: 2026-01-05T00:00:00Z
    variants:
      - {name: A, weight: 1}
      - {name: B, weight: 1, actions: [savings_plan]}
"""


def test_experiments_declared_in_yaml_are_applied_at_start_up(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(YAML, encoding="utf-8")
    declared = settings.model_copy(update={"experiments": str(path)})
    key = create_key(declared, "analyst", [Scope.EXPERIMENTS])

    with LiveServer(declared) as live, httpx.Client(base_url=live.url, headers=bearer(key)) as http:
        listed = http.get("/v1/experiments").json()

    assert [e["id"] for e in listed] == ["from-yaml"]


def test_a_bad_yaml_file_stops_the_start_naming_the_field(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(YAML.replace("savings_plan", "yacht"), encoding="utf-8")
    catalogue = load_catalogue(RETAIL_BANK_CATALOGUE)

    with closing(open_experiment_registry(settings.store)) as registry:
        with pytest.raises(InvalidExperiment) as refused:
            start_experiments(registry, declared=path, catalogue=catalogue)
        assert list_experiments(registry) == []

    assert refused.value.field == "experiments.0.variants.1.actions.0"


@pytest.mark.redis
def test_on_redis_decisions_are_exposed_and_the_report_reads_the_redis_logs(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis") as redis_server:
        on_redis = Settings(store=redis_server.url, environment="test")
        key = create_key(on_redis, "analyst", [Scope.ADMIN])
        with (
            LiveServer(on_redis) as live,
            httpx.Client(base_url=live.url, headers=bearer(key), timeout=30) as http,
        ):
            assert http.post("/v1/experiments", json=definition()).status_code == 201
            seen = {
                c: {variant_of(http, c, ch) for ch in ("atm", "web")} for c in ("c1", "c2", "c3")
            }
            report = http.get("/v1/experiments/nba-holdout/report", params={"format": "json"})

    assert all(len(variants) == 1 for variants in seen.values())
    assert report.status_code == 200, report.text
    assert sum(row["exposures"] for row in report.json()["variants"]) == 6
