"""The README's example experiment definition is valid, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

from experiments.definitions import load_experiments

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "experiments.yaml"


def test_the_example_definition_loads_with_its_three_variants() -> None:
    [experiment] = load_experiments(EXAMPLE)

    assert experiment.id == "atm-usual-offers"
    assert experiment.weights == {"holdout": 1, "champion": 1, "challenger": 1}
    assert [v.personalisation for v in experiment.variants] == [False, True, True]
    assert experiment.population.sample_percent == 50
