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
