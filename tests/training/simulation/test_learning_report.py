"""The engine learns the latent truth of the synthetic population far better than a baseline."""

from __future__ import annotations

from datetime import UTC, datetime

from training.simulation.learning_report import learning_report
from training.simulation.population import PopulationSpec


def test_learned_channels_and_defaults_track_the_latent_truth() -> None:
    spec = PopulationSpec(customers=300, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC))
    report = learning_report(spec)
    channel, defaults = report.channel, report.defaults
    assert channel.customers > 100
    assert channel.learned_equals_latent > 0.85
    assert channel.learned_equals_latent > channel.population_mode_equals_latent + 0.3
    assert 0.3 < defaults.coverage < 0.95
    # Habit noise is 20%: an offered default can match at most ~80% of requests.
    assert 0.65 < defaults.precision <= 0.85


def test_varying_amounts_and_rhythms_are_learned_better_than_the_baselines() -> None:
    spec = PopulationSpec(customers=200, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC))
    report = learning_report(spec)
    assert report.habits is not None
    kinds = report.habits.kinds
    assert set(kinds) == {"exact", "approximate", "periodic"}
    for kind in ("approximate", "periodic"):
        learned = kinds[kind]
        assert learned.requests > 200
        assert learned.engine.coverage >= 0.2
        assert learned.engine.precision > learned.last_value.precision
        # Amounts with cents: neither the engine nor a baseline offers them exactly.
        assert learned.engine.exact_precision < 0.2
    periodic = kinds["periodic"].rhythm_precision
    assert periodic is not None
    assert periodic > 0.6  # the baselines, offering at any time, score 0.5
    exact = kinds["exact"]
    assert exact.engine.exact_precision > exact.last_value.exact_precision


def test_the_engine_without_tolerance_misses_the_varying_amounts() -> None:
    from engine.config import EngineConfig
    from training.simulation.learning_report import habit_learning

    spec = PopulationSpec(
        customers=100, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC), periodic_share=0.7
    )
    exact_only = EngineConfig(habit_amount_tolerance=0, habit_amount_floor=0, habit_rhythm=False)
    before = habit_learning(spec, exact_only).kinds["approximate"]
    after = habit_learning(spec).kinds["approximate"]
    assert before.engine.coverage < 0.05
    assert after.engine.coverage > 0.5
