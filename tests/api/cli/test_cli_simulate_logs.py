"""`rapport simulate-logs`: what a live Rapport would have logged, written into the store, so
that `rapport export` and `rapport train` have decisions and outcomes to learn from."""

from __future__ import annotations

from contextlib import closing

from typer.testing import CliRunner

from api.cli import app
from api.settings import Settings
from engine.config import EngineConfig
from engine.events import Event, EventType
from feature_store.factory import open_store


def test_simulated_logs_land_in_the_store_with_their_outcomes(settings: Settings) -> None:
    runner = CliRunner(env={"RAPPORT_STORE": settings.store, "COLUMNS": "200"})
    args = ["simulate-logs", "--customers", "40", "--decisions", "200", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "200 decisions" in result.output

    with closing(open_store(settings.store, EngineConfig())) as store:
        decisions = store.read_log("decisions", 0, 1_000).records
        events = store.read_log("events", 0, 100_000).records
    assert len(decisions) == 200
    kinds = {Event.model_validate_json(record.body).type for record in events}
    assert EventType.OUTCOME in kinds, "the customers' answers are logged as outcome events"
    assert EventType.ACTION_EXPOSED in kinds, "the offers delivered count toward caps"


def test_too_many_decisions_for_the_population_is_a_clear_error(settings: Settings) -> None:
    runner = CliRunner(env={"RAPPORT_STORE": settings.store, "COLUMNS": "200"})
    args = ["simulate-logs", "--customers", "2", "--decisions", "100000"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "touches" in result.output
