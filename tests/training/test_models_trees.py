"""The boosted trees as served: arrays walked with numpy give scikit-learn's own log-odds,
malformed arrays are refused, and calibration corrects drift only when there is some."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from training.boosting import BoostingParams, fit_calibrated_trees
from training.calibration import Calibration, InvalidCalibration
from training.tree_ensemble import InvalidEnsemble, TreeEnsemble


def logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def labelled(rows: int, shift: float = 0.0, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Four features, some missing; acceptance rises with the first, falls with the second;
    `shift` raises the log-odds of the later rows (drift over time). Each call draws from its
    own generator: a test's data must not depend on which tests ran before it in the process
    (pytest-xdist deals a module's tests to several workers)."""
    rng = np.random.default_rng([seed, rows, round(shift * 1000)])
    x = rng.normal(size=(rows, 4))
    x[rng.random(rows) < 0.2, 2] = np.nan
    drift = shift * np.linspace(0.0, 1.0, rows)
    logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + np.where(np.isnan(x[:, 2]), 0.7, 0.0) + drift - 0.5
    return x, rng.random(rows) < logistic(logit)


def test_the_walk_over_the_arrays_is_scikit_learns_prediction() -> None:
    x, y = labelled(3_000)
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0)
    with threadpool_limits(limits=1):  # a shared machine: threads would only wait for cores
        model.fit(x, y)
    trees = TreeEnsemble.from_classifier(model, n_features=4)
    probe, _ = labelled(500)
    probe[:50, 3] = np.nan  # missing where training never saw a missing value
    np.testing.assert_allclose(trees.raw(probe), model.decision_function(probe), rtol=1e-12)
    again = TreeEnsemble.from_arrays(trees.arrays())
    np.testing.assert_array_equal(again.raw(probe), trees.raw(probe))
    assert trees.trees == 40
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        trees.raw(probe[:, :3])


def small_ensemble() -> dict[str, np.ndarray]:
    """One tree: a split on feature 0 at 0.5 with two leaves."""
    return {
        "feature": np.array([0, 0, 0]),
        "threshold": np.array([0.5, 0.0, 0.0]),
        "missing_left": np.array([True, False, False]),
        "left": np.array([1, 1, 2]),
        "right": np.array([2, 1, 2]),
        "value": np.array([0.0, -1.0, 2.0]),
        "roots": np.array([0]),
        "baseline": np.array([0.25]),
        "n_features": np.array([2]),
    }


def test_a_small_ensemble_routes_rows_and_missing_values() -> None:
    trees = TreeEnsemble.from_arrays(small_ensemble())
    rows = np.array([[0.2, 9.0], [0.9, 9.0], [np.nan, 9.0]])
    np.testing.assert_array_equal(trees.raw(rows), [-0.75, 2.25, -0.75])
    assert trees.depth == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"left": np.array([0, 1, 2])}, "shared or unreachable|cycle"),  # root -> root
        ({"right": np.array([1, 1, 2])}, "shared or unreachable"),  # both children: node 1
        ({"left": np.array([5, 1, 2])}, "outside the node arrays"),
        ({"feature": np.array([3, 0, 0])}, "outside 0..1"),
        ({"value": np.array([0.0, np.inf, 2.0])}, "finite"),
        ({"threshold": np.array([0.5, 0.0])}, "one length"),
    ],
)
def test_arrays_that_are_not_trees_are_refused(change: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidEnsemble, match=message):
        TreeEnsemble.from_arrays({**small_ensemble(), **change})


def test_missing_arrays_are_refused() -> None:
    arrays = small_ensemble()
    del arrays["roots"]
    with pytest.raises(InvalidEnsemble, match="missing arrays"):
        TreeEnsemble.from_arrays(arrays)


def test_sigmoid_calibration_recovers_a_known_map() -> None:
    rng = np.random.default_rng(94)
    raw = rng.normal(size=20_000) * 2
    accepted = rng.random(len(raw)) < logistic(2.0 * raw - 1.0)
    calibration = Calibration.fit(raw, accepted, "sigmoid")
    slope, intercept = calibration.y
    assert slope == pytest.approx(2.0, abs=0.1)
    assert intercept == pytest.approx(-1.0, abs=0.1)
    isotonic = Calibration.fit(raw, accepted, "isotonic")
    p = isotonic.probability(np.sort(raw))
    assert (np.diff(p) >= 0).all()
    assert p.min() >= 1e-4
    assert p.max() <= 1 - 1e-4
    again = Calibration.from_arrays(isotonic.arrays("c_"), "c_")
    np.testing.assert_array_equal(again.probability(raw), isotonic.probability(raw))
    with pytest.raises(InvalidCalibration):
        Calibration.from_arrays({**isotonic.arrays("c_"), "c_x": isotonic.x[::-1]}, "c_")


PARAMS = BoostingParams(max_iter=60, learning_rate=0.1)


def test_calibration_is_kept_only_when_the_future_drifts_from_the_past() -> None:
    """A significance check decides, so steady data sometimes calibrates by chance: over 8
    draws, most keep the trees' own probabilities, and every drifting one is shifted up."""
    kept_own, shifted_up = 0, 0
    for seed in range(8):
        steady_rows, steady = labelled(6_000, seed=seed)
        fitted = fit_calibrated_trees(
            steady_rows, steady, PARAMS, validation_start=4_800, seed=0, threads=1
        )
        assert fitted.calibration.method == "sigmoid"
        assert fitted.calibration_rows > 3_000
        kept_own += list(fitted.calibration.y) == [1.0, 0.0]  # the trees' own
        drifting_rows, drifting = labelled(6_000, shift=2.5, seed=seed)
        drifted = fit_calibrated_trees(
            drifting_rows, drifting, PARAMS, validation_start=4_800, seed=0, threads=1
        )
        _, intercept = drifted.calibration.y
        shifted_up += intercept > 0.2  # the past under-predicts the next fold: shifted up
    assert kept_own >= 5
    assert shifted_up == 8


def test_a_monotone_constraint_holds_in_the_served_trees() -> None:
    rows, accepted = labelled(4_000)
    fitted = fit_calibrated_trees(
        rows, accepted, PARAMS, validation_start=3_200, seed=0, threads=1, monotonic=[1, -1, 0, 0]
    )
    grid = np.zeros((50, 4))
    grid[:, 0] = np.linspace(-3, 3, 50)
    probability = fitted.calibration.probability(fitted.trees.raw(grid))
    assert (np.diff(probability) >= 0).all()
    assert probability[-1] > probability[0] + 0.3
