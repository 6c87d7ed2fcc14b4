"""Holdout metrics with answers worked out by hand: calibration, ranking of the returned
actions, defaults offered at a threshold, and the off-policy value of the scorer's
arbitration over the logged decisions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from engine.events import ProblemKind
from training.evaluate import (
    default_metrics,
    evaluate,
    expected_calibration_error,
    ranking_metrics,
)

FloatArray = np.ndarray


class FixedRates:
    """A FrameScorer with one acceptance probability per action (and per default)."""

    def __init__(
        self, rates: Mapping[str, float], defaults: Mapping[str, float] | None = None
    ) -> None:
        self.rates, self.defaults = rates, defaults

    def predict_actions(self, examples: pd.DataFrame) -> FloatArray:
        return np.array([self.rates[a] for a in examples["item_id"]], dtype=np.float64)

    def predict_defaults(self, examples: pd.DataFrame) -> FloatArray | None:
        if self.defaults is None:
            return None
        return np.array([self.defaults[a] for a in examples["item_id"]], dtype=np.float64)


def action(
    decision: str,
    item: str,
    rank: int,
    propensity: float,
    accepted: bool,
    allowed: list[str],
    problems: frozenset[str] = frozenset(),
) -> dict[str, object]:
    row: dict[str, object] = {
        "decision_id": decision,
        "customer_id": f"c-{decision}",
        "segment": "mass",
        "item_kind": "action",
        "item_id": item,
        "item_rank": float(rank),
        "item_propensity": propensity,
        "accepted": accepted,
        "allowed_actions": json.dumps(allowed),
        "open_problems.count": float(len(problems)),
    }
    row.update({f"open_problems.{k.value}": float(k.value in problems) for k in ProblemKind})
    return row


PAIR = ["usual_withdrawal", "paperless_statements"]
PROBLEM = ["mortgage_renegotiation", "feedback_follow_up"]
HOLDOUT = pd.DataFrame(
    [
        action("d1", "paperless_statements", 1, 0.5, True, PAIR),
        action("d2", "usual_withdrawal", 1, 0.5, True, PAIR),
        action("d3", "paperless_statements", 1, 0.5, True, PAIR),
        action("d4", "usual_withdrawal", 1, 0.5, False, PAIR),
        action("d5", "feedback_follow_up", 1, 0.95, True, PROBLEM, frozenset({"low_feedback"})),
        action("d5", "mortgage_renegotiation", 2, 1.0, False, PROBLEM),
    ]
)
RATES = {
    "usual_withdrawal": 0.7,  # x 2 EUR: priority 1.4
    "paperless_statements": 0.2,  # x 12 EUR: priority 2.4, first
    "mortgage_renegotiation": 0.5,  # x 900 x 1.5, but no open problem of its own
    "feedback_follow_up": 0.1,  # addresses the open low_feedback: first
}


def test_off_policy_value_of_the_scorers_arbitration() -> None:
    metrics = evaluate(FixedRates(RATES), HOLDOUT, epsilon=0.1, prefix="")
    # Target: the best first with 1 - epsilon + epsilon / 2 = 0.95, the other 0.05.
    # Weights target / logged: d1, d3 1.9; d2, d4 0.1; d5 0.95 / 0.95 = 1.
    weights = np.array([1.9, 0.1, 1.9, 0.1, 1.0])
    accepted = np.array([1, 1, 1, 0, 1])
    value = np.array([12, 2, 12, 2, 40]) * accepted  # catalogue EUR of the accepted
    assert metrics["ope_decisions"] == 5
    assert metrics["logged_acceptance"] == pytest.approx(4 / 5)
    assert metrics["logged_value"] == pytest.approx(value.mean())
    assert metrics["ips_acceptance"] == pytest.approx((weights * accepted).sum() / 5)
    assert metrics["snips_acceptance"] == pytest.approx((weights * accepted).sum() / weights.sum())
    assert metrics["ips_value"] == pytest.approx((weights * value).sum() / 5)
    assert metrics["snips_value"] == pytest.approx((weights * value).sum() / weights.sum())
    assert metrics["snips_value_ci_low"] < metrics["snips_value"] < metrics["snips_value_ci_high"]


def test_a_scorer_that_reverses_the_order_is_valued_on_the_other_decisions() -> None:
    # usual_withdrawal 0.9 x 2 EUR = 1.8 beats paperless_statements 0.1 x 12 EUR = 1.2.
    reversed_rates = {**RATES, "usual_withdrawal": 0.9, "paperless_statements": 0.1}
    metrics = evaluate(FixedRates(reversed_rates), HOLDOUT, epsilon=0.1, prefix="")
    weights = np.array([0.1, 1.9, 0.1, 1.9, 1.0])
    accepted = np.array([1, 1, 1, 0, 1])
    assert metrics["snips_acceptance"] == pytest.approx((weights * accepted).sum() / weights.sum())
    assert (
        metrics["snips_value"]
        < evaluate(FixedRates(RATES), HOLDOUT, epsilon=0.1)["holdout.snips_value"]
    )


def test_without_the_allowed_actions_there_is_no_off_policy_value() -> None:
    metrics = evaluate(FixedRates(RATES), HOLDOUT.drop(columns="allowed_actions"), prefix="")
    assert "snips_value" not in metrics
    assert "auc" in metrics


def test_metrics_are_prefixed_for_the_holdout() -> None:
    metrics = evaluate(FixedRates(RATES), HOLDOUT)
    assert all(name.startswith("holdout.") for name in metrics)
    assert metrics["holdout.rows"] == len(HOLDOUT)


def test_ranking_rewards_putting_the_accepted_action_first() -> None:
    slate = pd.DataFrame(
        {
            "decision_id": ["a", "a", "a", "b", "b"],
            "item_rank": [1.0, 2.0, 3.0, 1.0, 2.0],
            "accepted": [False, False, True, False, False],
        }
    )
    best = ranking_metrics(slate, np.array([0.1, 0.2, 0.9, 0.5, 0.4]), k=3)
    assert best["ndcg_at_3"] == 1.0  # only decision a has an acceptance to rank
    assert best["precision_at_1"] == 0.5  # a's top accepted, b's not
    worst = ranking_metrics(slate, np.array([0.9, 0.5, 0.1, 0.5, 0.4]), k=3)
    assert worst["ndcg_at_3"] == pytest.approx(1 / math.log2(4))
    assert worst["precision_at_1"] == 0.0
    top_only = ranking_metrics(slate, np.array([0.9, 0.5, 0.1, 0.5, 0.4]), k=1)
    assert top_only["ndcg_at_1"] == 0.0  # the accepted action is not in the first place


def test_calibration_error_is_zero_when_rates_match_and_grows_when_they_do_not() -> None:
    accepted = np.array([True, False, False, False, True, True, True, False])
    matching = np.array([0.25] * 4 + [0.75] * 4)
    assert expected_calibration_error(accepted, matching) == pytest.approx(0.0)
    off = np.array([0.05] * 4 + [0.95] * 4)
    assert expected_calibration_error(accepted, off) == pytest.approx(0.2)


def test_defaults_are_offered_at_the_threshold_or_all_without_a_model() -> None:
    accepted = np.array([True, True, False, True])
    gated = default_metrics(accepted, np.array([0.9, 0.6, 0.4, 0.2]), threshold=0.5)
    assert gated["default_coverage"] == 0.5
    assert gated["default_precision"] == 1.0
    assert gated["default_auc"] == pytest.approx(2 / 3)
    everything = default_metrics(accepted, None, threshold=0.5)
    assert everything["default_coverage"] == 1.0
    assert everything["default_precision"] == 0.75
    assert "default_auc" not in everything
