"""A fitted gradient-boosted tree ensemble as plain arrays, evaluated with numpy.

The classifiers are fitted by scikit-learn (`HistGradientBoostingClassifier`), but what a bundle
ships and serves is this: every node's split feature, threshold, direction for missing values,
children and leaf value, in flat arrays saved as `.npz` and read with `allow_pickle=False`.

* Safety: loading reads numbers; no code from the artifact runs, and no scikit-learn object is
  unpickled (so no pickle, joblib or skops load at all).
* Speed: one vectorised walk down every tree at once for the dozen rows of a decision takes tens
  of microseconds, where scikit-learn's `predict_proba` spends hundreds on input checks and
  thread start-up per call.
* Portability: the arrays outlive scikit-learn's private classes across versions.

The walk is scikit-learn's own rule for numerical splits (`_predict_one_from_raw_data`): a
missing value (NaN) goes where the split sent missing values in training, else `x <= threshold`
goes left. Categorical splits are not supported: features are one-hot encoded before fitting,
and `from_classifier` refuses a model that has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Deepest tree accepted from an artifact (the walk takes one step per level).
MAX_DEPTH = 64


class InvalidEnsemble(ValueError):
    """Arrays that do not describe a well-formed tree ensemble."""


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Trees over `n_features` features; node arrays are indexed globally across trees, and a
    leaf's children are itself, so a walk of `depth` steps ends on a leaf from any root."""

    feature: IntArray
    threshold: FloatArray
    missing_left: BoolArray
    left: IntArray
    right: IntArray
    value: FloatArray
    roots: IntArray
    baseline: float
    n_features: int
    depth: int

    @classmethod
    def from_classifier(cls, model: Any, n_features: int) -> TreeEnsemble:
        """The trees of a fitted binary `HistGradientBoostingClassifier`."""
        predictors = model._predictors  # one list of one tree per boosting iteration
        if any(len(trees) != 1 for trees in predictors):
            raise InvalidEnsemble("only binary classifiers (one tree per iteration) are exported")
        parts: dict[str, list[Any]] = {key: [] for key in _NODE_ARRAYS}
        roots: list[int] = []
        offset = 0
        for (tree,) in predictors:
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise InvalidEnsemble("categorical splits are not supported: one-hot encode")
            leaf = nodes["is_leaf"].astype(bool)
            own = np.arange(len(nodes), dtype=np.int64) + offset
            parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64))
            parts["threshold"].append(np.where(leaf, 0.0, nodes["num_threshold"]))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
            parts["right"].append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
            parts["value"].append(np.where(leaf, nodes["value"], 0.0))
            roots.append(offset)
            offset += len(nodes)
        arrays = {key: np.concatenate(values) for key, values in parts.items()}
        arrays["roots"] = np.array(roots, dtype=np.int64)
        arrays["baseline"] = np.array([float(np.ravel(model._baseline_prediction)[0])])
        arrays["n_features"] = np.array([n_features], dtype=np.int64)
        return cls.from_arrays(arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> TreeEnsemble:
        """The ensemble of `arrays()` output, checked: every node reached exactly once from
        the roots, children and features in range, finite numbers. Raises `InvalidEnsemble`."""
        missing = {*_NODE_ARRAYS, "roots", "baseline", "n_features"} - set(arrays)
        if missing:
            raise InvalidEnsemble(f"missing arrays: {sorted(missing)}")
        try:
            nodes = {
                "feature": np.asarray(arrays["feature"], dtype=np.int64),
                "threshold": np.asarray(arrays["threshold"], dtype=np.float64),
                "missing_left": np.asarray(arrays["missing_left"], dtype=bool),
                "left": np.asarray(arrays["left"], dtype=np.int64),
                "right": np.asarray(arrays["right"], dtype=np.int64),
                "value": np.asarray(arrays["value"], dtype=np.float64),
            }
            roots = np.asarray(arrays["roots"], dtype=np.int64)
            baseline = float(np.asarray(arrays["baseline"], dtype=np.float64).reshape(-1)[0])
            n_features = int(np.asarray(arrays["n_features"]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError) as error:
            raise InvalidEnsemble(f"unreadable arrays: {error}") from error
        size = len(nodes["feature"])
        if any(array.shape != (size,) for array in nodes.values()) or roots.ndim != 1:
            raise InvalidEnsemble("node arrays must be 1-D and of one length")
        if not (np.isfinite(nodes["value"]).all() and np.isfinite(baseline)):
            raise InvalidEnsemble("leaf values must be finite")
        if size == 0 or len(roots) == 0 or n_features < 1:
            raise InvalidEnsemble("an ensemble needs at least one tree and one feature")
        if ((nodes["feature"] < 0) | (nodes["feature"] >= n_features)).any():
            raise InvalidEnsemble(f"a split names a feature outside 0..{n_features - 1}")
        depth = _depth(nodes["left"], nodes["right"], roots)
        return cls(roots=roots, baseline=baseline, n_features=n_features, depth=depth, **nodes)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """What `from_arrays` reads back: plain numeric arrays, for `np.savez`."""
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "missing_left": self.missing_left,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "roots": self.roots,
            "baseline": np.array([self.baseline]),
            "n_features": np.array([self.n_features], dtype=np.int64),
        }

    def raw(self, rows: FloatArray) -> FloatArray:
        """The log-odds of each row of `rows` (shape (n, n_features); NaN is missing)."""
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must have shape (n, {self.n_features}), not {rows.shape}")
        count = rows.shape[0]
        flat = rows.ravel()
        row_start = (np.arange(count, dtype=np.int64) * self.n_features)[:, None]
        node = np.broadcast_to(self.roots, (count, len(self.roots))).copy()
        for _ in range(self.depth):
            value = flat[row_start + self.feature[node]]
            go_left = np.where(
                np.isnan(value), self.missing_left[node], value <= self.threshold[node]
            )
            node = np.where(go_left, self.left[node], self.right[node])
        raw: FloatArray = self.baseline + self.value[node].sum(axis=1)
        return raw

    @property
    def trees(self) -> int:
        return len(self.roots)


_NODE_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "value")


def _depth(left: IntArray, right: IntArray, roots: IntArray) -> int:
    """Levels below the roots, checking that the nodes form trees: every node is reached once,
    leaves point to themselves and nothing points outside the arrays."""
    size = len(left)
    outside = (left < 0) | (left >= size) | (right < 0) | (right >= size)
    if outside.any() or ((roots < 0) | (roots >= size)).any():
        raise InvalidEnsemble("a child or root index is outside the node arrays")
    leaf = (left == np.arange(size)) & (right == np.arange(size))
    seen = np.zeros(size, dtype=np.int64)
    np.add.at(seen, roots, 1)
    frontier = roots[~leaf[roots]]
    depth = 0
    while len(frontier):
        depth += 1
        if depth > MAX_DEPTH:
            raise InvalidEnsemble(f"trees deeper than {MAX_DEPTH} levels (or a cycle)")
        children = np.concatenate([left[frontier], right[frontier]])
        np.add.at(seen, children, 1)
        frontier = children[~leaf[children]]
    if (seen != 1).any():
        raise InvalidEnsemble("the nodes do not form trees: a node is shared or unreachable")
    return depth
