"""Off-policy evaluation on real logs: the Open Bandit Dataset sample (see data/README.md).

ZOZOTOWN ran two policies side by side on the same traffic in the same week: uniform
random (item chosen with probability 1/80 per position) and Bernoulli Thompson Sampling
(BTS). Each logged row is one item shown at one position, with its click (0/1) and the
logging policy's propensity. The BTS logs give BTS's on-policy click rate directly, so an
off-policy estimate of BTS from the *random* logs can be checked against it.

The BTS policy is taken as its empirical action distribution per position over the week
(the share of BTS impressions at that position that showed each item): BTS was updated
during the week, and this time-averaged policy is the one whose value the BTS logs measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.ope import PolicyValueEstimate, ips, snips

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def random_logs() -> pd.DataFrame:
    return pd.read_csv(DATA / "obd_random_all.csv.gz")


@pytest.fixture(scope="module")
def bts_logs() -> pd.DataFrame:
    return pd.read_csv(DATA / "obd_bts_all.csv.gz")


def bts_item_shares(bts_logs: pd.DataFrame) -> pd.Series:
    """P(item | position) under BTS, indexed by (position, item_id)."""
    shown = bts_logs.groupby(["position", "item_id"]).size()
    return shown / shown.groupby(level="position").transform("sum")


def consistent(estimate: PolicyValueEstimate, on_policy: pd.Series) -> bool:
    """Both are noisy: is their difference within 1.96 standard errors of the difference?"""
    on_policy_se = math.sqrt(on_policy.mean() * (1 - on_policy.mean()) / on_policy.size)
    z = (estimate.value - on_policy.mean()) / math.hypot(estimate.standard_error, on_policy_se)
    return abs(z) < 1.96


def test_the_data_is_what_the_tests_assume(
    random_logs: pd.DataFrame, bts_logs: pd.DataFrame
) -> None:
    for logs in (random_logs, bts_logs):
        assert list(logs.columns) == ["item_id", "position", "click", "propensity_score"]
        assert len(logs) == 10_000
        assert set(logs["position"]) == {1, 2, 3}
        assert set(logs["click"]) == {0, 1}
    assert np.allclose(random_logs["propensity_score"], 1 / 80)


@pytest.mark.parametrize("estimator", [ips, snips])
def test_random_logs_estimate_the_bts_click_rate(
    estimator: Callable[..., PolicyValueEstimate], random_logs: pd.DataFrame, bts_logs: pd.DataFrame
) -> None:
    shares = bts_item_shares(bts_logs)
    target = shares.reindex(
        pd.MultiIndex.from_frame(random_logs[["position", "item_id"]]), fill_value=0.0
    ).to_numpy()

    estimate = estimator(random_logs["click"], random_logs["propensity_score"], target)

    bts_click_rate = bts_logs["click"].mean()  # 0.0042
    assert estimate.ci_low <= bts_click_rate <= estimate.ci_high
    assert consistent(estimate, bts_logs["click"])
    # Informative, not vacuous: the interval excludes a click rate twice as high, and the
    # weights leave a sizeable effective sample.
    assert estimate.ci_high < 2 * bts_click_rate
    assert estimate.effective_sample_size > 1000


@pytest.mark.parametrize("estimator", [ips, snips])
def test_bts_logs_estimate_the_uniform_random_click_rate(
    estimator: Callable[..., PolicyValueEstimate], random_logs: pd.DataFrame, bts_logs: pd.DataFrame
) -> None:
    # The other way round uses BTS's real logged propensities, down to 4.5e-5: weights up to
    # about 280 and an effective sample of about 340 impressions out of 10,000.
    uniform = np.full(len(bts_logs), 1 / 80)

    estimate = estimator(bts_logs["click"], bts_logs["propensity_score"], uniform)

    assert consistent(estimate, random_logs["click"])
    assert 200 < estimate.effective_sample_size < 500
