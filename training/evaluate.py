"""Evaluation on held-out logged decisions: the same metrics for a bundle, a champion and the
baselines, so that a challenger and the champion can be compared on the same holdout.

Metrics (flat names, prefixed `holdout.` by default):

* acceptance of actions, over every returned action: `auc`, `log_loss`, `brier`, `ece`
  (expected calibration error: |mean p - acceptance rate| averaged over 10 equal-width bins of
  p, weighted by their rows);
* ranking of the returned actions of each decision by the scorer's probability:
  `precision_at_1` (the top one accepted) and `ndcg_at_{k}` (binary gains, over the decisions
  with an acceptance);
* defaults at `min_default_acceptance`: `default_precision` (share of the defaults offered that
  were accepted), `default_coverage` (share of the logged defaults offered), and, when the
  scorer gives probabilities, `default_auc` and `default_log_loss`. A scorer with no opinion
  (`predict_defaults` is None) offers every default, as the engine does. Only on examples
  with the habit strength the decisions logged (`training.dataset.DEFAULT_COLUMNS`);
* off-policy value of the policy that ranks with the scorer, on the decisions whose first
  action was logged with its propensity (`ope_decisions`): the business value of the first
  offer per decision, EUR (its catalogue value if accepted, else 0), as `ips_value` and
  `snips_value` (with `snips_value_ci_low`, `snips_value_ci_high`), and its acceptance rate as
  `ips_acceptance` and `snips_acceptance` (with its interval); `logged_value` and
  `logged_acceptance` are what the logging policy got; `ope_effective_sample_size` is Kish's
  of the importance weights. The target policy is the engine's arbitration: problems first,
  then probability x value x weight (catalogue), epsilon-greedy with the logging exploration's
  epsilon, over the actions the logged decision allowed (`training.dataset.ALLOWED_COLUMN`;
  without it, no off-policy metrics). It maximises value, not acceptance: a policy can win on
  `snips_value` while accepting less often.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from engine.arbitration import Exploration
from engine.catalogue import RETAIL_BANK_CATALOGUE, Action, Catalogue, load_catalogue
from experiments.errors import InvalidLogs
from experiments.ope import ips, snips
from training.dataset import ALLOWED_COLUMN, DEFAULT_COLUMNS

FloatArray = npt.NDArray[np.float64]
ECE_BINS = 10


class FrameScorer(Protocol):
    """Acceptance probabilities of logged examples (rows of `training.dataset` examples)."""

    def predict_actions(self, examples: pd.DataFrame) -> FloatArray:
        """P(accept) of each row's action (`item_id`) given its features, in [0, 1]."""
        ...

    def predict_defaults(self, examples: pd.DataFrame) -> FloatArray | None:
        """P(accepted) of each row's default; None: no opinion (every default is offered)."""
        ...


def evaluate(
    scorer: FrameScorer,
    holdout: pd.DataFrame,
    *,
    min_default_acceptance: float = 0.5,
    k: int = 3,
    catalogue: Catalogue | None = None,
    epsilon: float | None = None,
    prefix: str = "holdout.",
) -> dict[str, float]:
    """The metrics of `scorer` on the `holdout` examples (see the module docstring).

    `catalogue`: the actions' value, weight and problems addressed (the retail bank's by
    default); `epsilon`: the target policy's exploration (the engine's default if None).
    Metrics that a holdout cannot support (no action, a single class) are left out."""
    actions = holdout.loc[holdout["item_kind"] == "action"]
    defaults = holdout.loc[holdout["item_kind"] == "default"]
    metrics: dict[str, float] = {}
    if len(actions):
        probability = scorer.predict_actions(actions)
        accepted = actions["accepted"].to_numpy(dtype=bool)
        metrics.update(classification_metrics(accepted, probability))
        metrics.update(ranking_metrics(actions, probability, k))
        metrics.update(
            off_policy_metrics(
                scorer,
                actions,
                catalogue or _retail_bank(),
                Exploration().epsilon if epsilon is None else epsilon,
            )
        )
    if len(defaults) and set(DEFAULT_COLUMNS) <= set(holdout.columns):
        metrics.update(
            default_metrics(
                defaults["accepted"].to_numpy(dtype=bool),
                scorer.predict_defaults(defaults),
                min_default_acceptance,
            )
        )
    return {f"{prefix}{name}": value for name, value in metrics.items()}


@functools.cache
def _retail_bank() -> Catalogue:
    return load_catalogue(RETAIL_BANK_CATALOGUE)


def classification_metrics(
    accepted: npt.NDArray[np.bool_], probability: FloatArray
) -> dict[str, float]:
    metrics = {
        "rows": float(len(accepted)),
        "acceptance_rate": float(accepted.mean()),
        "brier": float(np.mean((probability - accepted) ** 2)),
        "ece": expected_calibration_error(accepted, probability),
    }
    if len(np.unique(accepted)) == 2:
        metrics["auc"] = float(roc_auc_score(accepted, probability))
        metrics["log_loss"] = float(log_loss(accepted, np.clip(probability, 1e-6, 1 - 1e-6)))
    return metrics


def expected_calibration_error(accepted: npt.NDArray[np.bool_], probability: FloatArray) -> float:
    bins = np.minimum((probability * ECE_BINS).astype(int), ECE_BINS - 1)
    error = 0.0
    for number in np.unique(bins):
        members = bins == number
        error += members.mean() * abs(probability[members].mean() - accepted[members].mean())
    return float(error)


def ranking_metrics(actions: pd.DataFrame, probability: FloatArray, k: int) -> dict[str, float]:
    """Precision@1 and NDCG@k of the logged slates re-ranked by `probability`."""
    slates = pd.DataFrame(
        {
            "decision": actions["decision_id"].to_numpy(),
            "p": probability,
            "rank": actions["item_rank"].to_numpy(dtype=np.float64),
            "gain": actions["accepted"].to_numpy(dtype=np.float64),
        }
    )
    ordered = slates.sort_values(["decision", "p", "rank"], ascending=[True, False, True])
    position = ordered.groupby("decision", sort=False).cumcount().to_numpy()
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    dcg = (ordered["gain"] * discount).groupby(ordered["decision"]).sum()
    top = ordered.loc[position == 0].set_index("decision")["gain"]
    ideal_order = slates.sort_values(["decision", "gain"], ascending=[True, False])
    ideal_position = ideal_order.groupby("decision", sort=False).cumcount().to_numpy()
    ideal_discount = np.where(ideal_position < k, 1.0 / np.log2(ideal_position + 2.0), 0.0)
    idcg = (ideal_order["gain"] * ideal_discount).groupby(ideal_order["decision"]).sum()
    answered = idcg > 0
    metrics = {"precision_at_1": float(top.mean()), "ranked_decisions": float(len(top))}
    if answered.any():
        metrics[f"ndcg_at_{k}"] = float((dcg[answered] / idcg[answered]).mean())
    return metrics


def default_metrics(
    accepted: npt.NDArray[np.bool_], probability: FloatArray | None, threshold: float
) -> dict[str, float]:
    offered = (
        np.ones(len(accepted), dtype=bool) if probability is None else probability >= threshold
    )
    metrics = {
        "default_rows": float(len(accepted)),
        "default_coverage": float(offered.mean()),
        "default_precision": float(accepted[offered].mean()) if offered.any() else math.nan,
    }
    if probability is not None and len(np.unique(accepted)) == 2:
        metrics["default_auc"] = float(roc_auc_score(accepted, probability))
        metrics["default_log_loss"] = float(
            log_loss(accepted, np.clip(probability, 1e-6, 1 - 1e-6))
        )
    return metrics


def off_policy_metrics(
    scorer: FrameScorer, actions: pd.DataFrame, catalogue: Catalogue, epsilon: float
) -> dict[str, float]:
    """IPS and SNIPS of the scorer's arbitration on the logged first actions."""
    if ALLOWED_COLUMN not in actions.columns:
        return {}
    first = actions.loc[
        (actions["item_rank"] == 1)
        & actions[ALLOWED_COLUMN].notna()
        & (actions["item_propensity"] > 0)
    ]
    known = {action.id: action for action in catalogue.actions}
    candidates = [
        [a for a in json.loads(allowed) if a in known] for allowed in first[ALLOWED_COLUMN]
    ]
    usable = np.array(
        [logged in allowed for logged, allowed in zip(first["item_id"], candidates, strict=True)],
        dtype=bool,
    )
    first = first.loc[usable]
    candidates = [allowed for allowed, kept in zip(candidates, usable, strict=True) if kept]
    if len(first) < 2:
        return {}
    expanded = first.loc[first.index.repeat([len(c) for c in candidates])].copy()
    expanded["item_id"] = [action for allowed in candidates for action in allowed]
    probability = scorer.predict_actions(expanded)
    target = _target_propensities(expanded, probability, candidates, first, known, epsilon)
    accepted = first["accepted"].to_numpy(dtype=np.float64)
    values = np.array([known[a].value for a in first["item_id"]], dtype=np.float64)
    logged = first["item_propensity"].to_numpy(dtype=np.float64)
    metrics = {"ope_decisions": float(len(first))}
    for name, rewards in (("value", accepted * values), ("acceptance", accepted)):
        metrics[f"logged_{name}"] = float(rewards.mean())
        metrics[f"ips_{name}"] = ips(rewards, logged, target).value
        try:
            estimate = snips(rewards, logged, target)
        except InvalidLogs:  # the target never takes a logged action
            continue
        metrics[f"snips_{name}"] = estimate.value
        metrics[f"snips_{name}_ci_low"] = estimate.ci_low
        metrics[f"snips_{name}_ci_high"] = estimate.ci_high
        metrics["ope_effective_sample_size"] = estimate.effective_sample_size
    return metrics


def _target_propensities(
    expanded: pd.DataFrame,
    probability: FloatArray,
    candidates: list[list[str]],
    first: pd.DataFrame,
    known: Mapping[str, Action],
    epsilon: float,
) -> FloatArray:
    """Probability that the target arbitration puts each decision's logged action first."""
    problem_columns = [
        c for c in expanded.columns if c.startswith("open_problems.") and c != "open_problems.count"
    ]
    problems = expanded[problem_columns].to_numpy(dtype=np.float64) == 1.0
    kinds = [c.removeprefix("open_problems.") for c in problem_columns]
    target = np.empty(len(candidates))
    start = 0
    for number, (allowed, logged) in enumerate(zip(candidates, first["item_id"], strict=True)):
        best: tuple[bool, float, str] | None = None
        for offset, action_id in enumerate(allowed):
            action = known[action_id]
            row = start + offset
            open_kinds = {kind for kind, on in zip(kinds, problems[row], strict=True) if on}
            addresses = {problem.value for problem in action.addresses}
            key = (
                not (open_kinds & addresses),
                -probability[row] * action.value * action.weight,
                action_id,
            )
            best = key if best is None or key < best else best
        assert best is not None
        target[number] = (1 - epsilon) * (best[2] == logged) + epsilon / len(allowed)
        start += len(allowed)
    return target
