"""Affinity: what the answers logged up to a point in time say about a customer and an action.

An `AffinityModel` is fitted on the answers known before a time `t` and gives, for a customer,
an action and the customer's value segment, the `AFFINITY_FEATURES` of the propensity
classifier:

* `affinity.score`: implicit ALS (the `implicit` library) over customers x actions and
  products, the dot product of their factors, a preference around [0, 1]; NaN when the model
  does not know the customer or the action. Interactions per customer and item: an action the
  customer accepted is liked with confidence 1 + alpha * times accepted; one they only declined
  is disliked (a negative value: implicit reads preference 0 with confidence 1 + alpha * times
  declined); a product a touchpoint said they hold (`context.products`) is liked, 1 + alpha.
  ALS generalises: a customer who takes up offers like the ones others took up scores high on
  those others too;
* `history.accepted`, `history.declined`: the customer's own answers to this action, and
  `history.customer_accepted`, `history.customer_declined`: to any action (0 when none);
* `history.segment_rate`: the smoothed acceptance rate of the action in the segment
  (`engine.arbitration.AcceptanceRates`, what the online rates serve), so that the classifier
  starts from what the engine knows without a model, and an action too rare to get a leaf of
  its own still gets its own rate. NaN before any answer is known.

The score is a feature of the classifier, not a blend: the classifier learns how much a
customer's history adds to the profile's facts.

Customers are indexed by `engine.identity.customer_digest`, the digest erasure records keep: a
bundle holds no customer id, and the rows of an erased customer can be found and dropped.

Leakage: a model fitted on answers given after an example must not describe it, or the
classifier learns to trust features that already contain the label. `point_in_time_features`
gives each training example the features of a model fitted on the answers known before the
window the example is in; the served model (which also describes the holdout) is fitted on
everything known before the holdout starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import BaseModel, ConfigDict, Field
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from engine.arbitration import AcceptanceRates
from engine.facts import PRODUCTS
from engine.identity import customer_digest

FloatArray = npt.NDArray[np.float64]
ACTION_ITEM = "action:{}"
PRODUCT_ITEM = "product:{}"
AFFINITY_FEATURES = (
    "affinity.score",
    "history.accepted",
    "history.declined",
    "history.customer_accepted",
    "history.customer_declined",
    "history.segment_rate",
)
_PRODUCT_COLUMNS = {f"context.products.{product}": product for product in sorted(PRODUCTS)}


class AffinityParams(BaseModel):
    """ALS hyper-parameters (implicit's names) and how training examples are described."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factors: int = Field(8, ge=1, le=256)
    regularization: float = Field(0.1, ge=0)
    iterations: int = Field(15, ge=1, le=200)
    alpha: float = Field(10.0, ge=0, description="Confidence added per interaction.")
    checkpoints: int = Field(
        8,
        ge=1,
        le=50,
        description="Fits over the training period for point-in-time features of its examples.",
    )


class InvalidAffinity(ValueError):
    """Arrays or an index that do not describe an affinity model."""


@dataclass(frozen=True, eq=False)
class Answers:
    """Each customer's answers per item: one entry per (customer row, item column) answered,
    sorted, with the times accepted and declined; `width` is the number of items."""

    rows: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    accepted: npt.NDArray[np.float32]
    declined: npt.NDArray[np.float32]
    width: int

    @cached_property
    def _keys(self) -> npt.NDArray[np.int64]:
        keys: npt.NDArray[np.int64] = self.rows * self.width + self.items
        return keys

    def counts(
        self, rows: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray]:
        """(accepted, declined) of each (row, item) pair; 0 where never answered."""
        if len(self.rows) == 0:
            return np.zeros(len(rows)), np.zeros(len(rows))
        wanted = rows * self.width + items
        position = np.minimum(np.searchsorted(self._keys, wanted), len(self.rows) - 1)
        found = self._keys[position] == wanted
        accepted = np.where(found, self.accepted[position], 0.0).astype(np.float64)
        declined = np.where(found, self.declined[position], 0.0).astype(np.float64)
        return accepted, declined

    def totals(self, customers: int) -> tuple[FloatArray, FloatArray]:
        """(accepted, declined) over every item, per customer row."""
        accepted = np.bincount(self.rows, weights=self.accepted, minlength=customers)
        declined = np.bincount(self.rows, weights=self.declined, minlength=customers)
        return accepted.astype(np.float64), declined.astype(np.float64)


@dataclass(frozen=True, eq=False)
class AffinityModel:
    """ALS factors of the customers (by digest) and of the items (`action:<id>`,
    `product:<id>`), each customer's `answers` to the actions, and the rates by action and
    segment."""

    customers: Mapping[str, int]
    items: Mapping[str, int]
    customer_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    answers: Answers
    rates: AcceptanceRates
    _totals: tuple[FloatArray, FloatArray] = field(init=False, repr=False)
    _rate_cache: dict[tuple[str, str], float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Derived once, so that serving a decision reads a few entries, not the whole table.
        object.__setattr__(self, "_totals", self.answers.totals(len(self.customers)))
        object.__setattr__(self, "_rate_cache", {})

    def features(self, customer_id: str, action_ids: Sequence[str], segment: str) -> FloatArray:
        """`AFFINITY_FEATURES` of the customer for each action (shape (n, 6))."""
        count = len(action_ids)
        return self.frame_features([customer_id] * count, action_ids, [segment] * count)

    def frame_features(
        self, customer_ids: Sequence[str], action_ids: Sequence[str], segments: Sequence[str]
    ) -> FloatArray:
        """`AFFINITY_FEATURES` of each (customer, action, segment)."""
        digests = {c: customer_digest(c) for c in set(customer_ids)}
        rows = np.array([self.customers.get(digests[c], -1) for c in customer_ids], dtype=np.int64)
        items = np.array(
            [self.items.get(ACTION_ITEM.format(a), -1) for a in action_ids], dtype=np.int64
        )
        features = unknown_features(len(rows))
        known = (rows >= 0) & (items >= 0)
        if known.any():
            pairs = self.customer_factors[rows[known]] * self.item_factors[items[known]]
            features[known, 0] = pairs.sum(axis=1, dtype=np.float64)
            accepted, declined = self.answers.counts(rows[known], items[known])
            features[known, 1], features[known, 2] = accepted, declined
        customer = rows >= 0
        features[customer, 3] = self._totals[0][rows[customer]]
        features[customer, 4] = self._totals[1][rows[customer]]
        features[:, 5] = [self._rate(a, s) for a, s in zip(action_ids, segments, strict=True)]
        return features

    def _rate(self, action_id: str, segment: str) -> float:
        key = (action_id, segment)
        rate = self._rate_cache.get(key)
        if rate is None:
            rate = self.rates.rate(action_id, segment) if self.rates.counts else np.nan
            self._rate_cache[key] = rate
        return rate

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "customer_factors": self.customer_factors,
            "item_factors": self.item_factors,
            "answer_rows": self.answers.rows,
            "answer_items": self.answers.items,
            "answer_accepted": self.answers.accepted,
            "answer_declined": self.answers.declined,
        }

    def index(self) -> dict[str, Any]:
        """JSON-ready: customer digests and item names in row order, and the rates' counts."""
        return {
            "customers": _ordered(self.customers),
            "items": _ordered(self.items),
            "rates": {key: list(value) for key, value in sorted(self.rates.counts.items())},
        }

    @classmethod
    def from_saved(
        cls, arrays: Mapping[str, npt.NDArray[Any]], index: Mapping[str, Any]
    ) -> AffinityModel:
        """The model of `arrays()` and `index()`, with its shapes checked."""
        try:
            customer_factors = np.asarray(arrays["customer_factors"], dtype=np.float32)
            item_factors = np.asarray(arrays["item_factors"], dtype=np.float32)
            answers = Answers(
                rows=np.asarray(arrays["answer_rows"], dtype=np.int64),
                items=np.asarray(arrays["answer_items"], dtype=np.int64),
                accepted=np.asarray(arrays["answer_accepted"], dtype=np.float32),
                declined=np.asarray(arrays["answer_declined"], dtype=np.float32),
                width=len(index["items"]),
            )
            customers = [str(digest) for digest in index["customers"]]
            items = [str(item) for item in index["items"]]
            counts = {
                str(key): (float(shown), float(taken))
                for key, (shown, taken) in index["rates"].items()
            }
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidAffinity(f"unreadable affinity model: {error}") from error
        _check(customer_factors, item_factors, answers, len(customers), len(items))
        if len(set(customers)) != len(customers) or len(set(items)) != len(items):
            raise InvalidAffinity("the index repeats a customer or an item")
        return cls(
            customers={digest: row for row, digest in enumerate(customers)},
            items={item: row for row, item in enumerate(items)},
            customer_factors=customer_factors,
            item_factors=item_factors,
            answers=answers,
            rates=AcceptanceRates(counts=counts),
        )


def _check(
    customer_factors: npt.NDArray[np.float32],
    item_factors: npt.NDArray[np.float32],
    answers: Answers,
    customers: int,
    items: int,
) -> None:
    if customer_factors.ndim != 2 or item_factors.ndim != 2:
        raise InvalidAffinity("factors must be 2-D")
    if customer_factors.shape[1] != item_factors.shape[1]:
        raise InvalidAffinity("customers and items have factors of different sizes")
    if (customer_factors.shape[0], item_factors.shape[0]) != (customers, items):
        raise InvalidAffinity("the index does not match the factor rows")
    if not (np.isfinite(customer_factors).all() and np.isfinite(item_factors).all()):
        raise InvalidAffinity("factors must be finite")
    size = len(answers.rows)
    if any(a.shape != (size,) for a in (answers.items, answers.accepted, answers.declined)):
        raise InvalidAffinity("the answer arrays must be 1-D and of one length")
    inside = (answers.rows >= 0) & (answers.rows < customers)
    inside &= (answers.items >= 0) & (answers.items < items)
    keys = answers.rows * items + answers.items
    if not inside.all() or (size and (np.diff(keys) <= 0).any()):
        raise InvalidAffinity("the answers are outside the index or not sorted and distinct")
    counts = np.concatenate([answers.accepted, answers.declined])
    if not (np.isfinite(counts).all() and (counts >= 0).all()):
        raise InvalidAffinity("answer counts must be finite and non-negative")


def unknown_features(count: int) -> FloatArray:
    """The features of rows about which nothing was known yet."""
    features = np.zeros((count, len(AFFINITY_FEATURES)))
    features[:, 0] = features[:, 5] = np.nan
    return features


def fit_affinity(
    examples: pd.DataFrame, before: pd.Timestamp, params: AffinityParams, *, seed: int
) -> AffinityModel:
    """The model of what `examples` tell was known before `before` (answers by `outcome_at`,
    products held by `decided_at`)."""
    table = _interactions(examples, before)
    customer_ids = sorted(set(table["customer_id"]))
    items = sorted(set(table["item"]))
    customer_row = {customer: row for row, customer in enumerate(customer_ids)}
    item_column = {item: column for column, item in enumerate(items)}
    rows = np.array([customer_row[c] for c in table["customer_id"]], dtype=np.int64)
    cols = np.array([item_column[i] for i in table["item"]], dtype=np.int64)
    shape = (len(customer_ids), len(items))
    order = np.lexsort((cols, rows))  # one (customer, item) pair per row of `table`
    answers = Answers(
        rows=rows[order],
        items=cols[order],
        accepted=table["accepted"].to_numpy(np.float32)[order],
        declined=table["declined"].to_numpy(np.float32)[order],
        width=len(items),
    )
    customer_factors, item_factors = _als(table, rows, cols, shape, params, seed)
    return AffinityModel(
        customers={customer_digest(c): row for c, row in customer_row.items()},
        items=item_column,
        customer_factors=customer_factors,
        item_factors=item_factors,
        answers=answers,
        rates=answer_rates(examples, before),
    )


def point_in_time_features(
    examples: pd.DataFrame, starts: Sequence[pd.Timestamp], params: AffinityParams, *, seed: int
) -> FloatArray:
    """The `AFFINITY_FEATURES` of each row, each row described by the model fitted on what was
    known before the latest of `starts` at or before its `decided_at` (`unknown_features`
    before the first). `starts` must be increasing."""
    features = unknown_features(len(examples))
    decided = examples["decided_at"]
    bounds = [*starts, None]
    for start, end in pairwise(bounds):
        assert start is not None
        after = decided >= start
        in_window = (after if end is None else after & (decided < end)).to_numpy(dtype=bool)
        if not in_window.any():
            continue
        model = fit_affinity(examples, start, params, seed=seed)
        window = examples.loc[in_window]
        features[in_window] = model.frame_features(
            window["customer_id"].astype(str).tolist(),
            window["item_id"].astype(str).tolist(),
            window["segment"].astype(str).tolist(),
        )
    return features


# -- fitting -----------------------------------------------------------------------------------


def _interactions(examples: pd.DataFrame, before: pd.Timestamp) -> pd.DataFrame:
    """(customer_id, item, accepted, declined, liked, times) known before `before`."""
    actions = examples.loc[
        (examples["item_kind"] == "action")
        & (examples["outcome_at"] < before)
        & (examples["accepted"] | examples["declined"])
    ]
    answers = actions.groupby(["customer_id", "item_id"], sort=True).agg(
        accepted=("accepted", "sum"), declined=("declined", "sum")
    )
    answers = answers.reset_index()
    answers["item"] = [ACTION_ITEM.format(a) for a in answers["item_id"]]
    decided = examples.loc[examples["decided_at"] < before]
    latest = decided.drop_duplicates("customer_id", keep="last")  # examples are in time order
    held = latest.melt(
        id_vars=["customer_id"],
        value_vars=list(_PRODUCT_COLUMNS),
        var_name="column",
        value_name="held",
    )
    held = held.loc[held["held"] == 1.0]
    products = pd.DataFrame(
        {
            "customer_id": held["customer_id"].to_numpy(),
            "item": [PRODUCT_ITEM.format(_PRODUCT_COLUMNS[c]) for c in held["column"]],
            "accepted": 0,
            "declined": 0,
        }
    )
    table = pd.concat(
        [answers[["customer_id", "item", "accepted", "declined"]], products], ignore_index=True
    )
    is_product = table["item"].str.startswith("product:").to_numpy(dtype=bool)
    table["liked"] = is_product | (table["accepted"] > 0).to_numpy(dtype=bool)
    table["times"] = np.where(
        is_product, 1, np.where(table["accepted"] > 0, table["accepted"], table["declined"])
    )
    return table


def _als(
    table: pd.DataFrame,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    shape: tuple[int, int],
    params: AffinityParams,
    seed: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    if len(table) == 0:
        empty = np.zeros((0, params.factors), dtype=np.float32)
        return empty, np.zeros((shape[1], params.factors), dtype=np.float32)
    confidence = 1.0 + params.alpha * table["times"].to_numpy(dtype=np.float64)
    values = np.where(table["liked"].to_numpy(dtype=bool), confidence, -confidence)
    matrix = csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
    # One BLAS thread (implicit's advice) and one solver thread: the same fit every run.
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            iterations=params.iterations,
            random_state=seed,
            num_threads=1,
        )
        model.fit(matrix, show_progress=False)
    return (
        np.asarray(model.user_factors, dtype=np.float32),
        np.asarray(model.item_factors, dtype=np.float32),
    )


def answer_rates(examples: pd.DataFrame, before: pd.Timestamp | None = None) -> AcceptanceRates:
    """`AcceptanceRates` counted as the population counters count them, from the answers to
    actions known before `before` (all of them if None): shown and accepted by action and
    segment, and by action over all segments."""
    actions = examples.loc[examples["item_kind"] == "action"]
    if before is not None:
        actions = actions.loc[actions["outcome_at"] < before]
    counts: dict[str, tuple[float, float]] = {}
    grouped = actions.groupby(["item_id", "segment"], sort=True)["accepted"].agg(["size", "sum"])
    for action, segment, shown, taken in zip(
        grouped.index.get_level_values("item_id"),
        grouped.index.get_level_values("segment"),
        grouped["size"],
        grouped["sum"],
        strict=True,
    ):
        counts[f"{action}|{segment}"] = (float(shown), float(taken))
        overall = counts.get(f"{action}|*", (0.0, 0.0))
        counts[f"{action}|*"] = (overall[0] + float(shown), overall[1] + float(taken))
    return AcceptanceRates(counts=counts)


def _ordered(index: Mapping[str, int]) -> list[str]:
    return [name for name, _ in sorted(index.items(), key=lambda pair: pair[1])]
