"""The numbers a classifier sees for a decision: one encoding for training and for serving.

A decision's features are `feature_store.offline.replay.feature_columns()`: the training examples
hold
them as columns (from the point-in-time replay), and a served decision gets them from
`feature_store.offline.replay.flatten_facts(facts)`. Both go through `FeatureEncoder.encode`, one
vectorised function over a block of rows (a frame in training, a single row when serving), so
what the model sees cannot drift between the two:

* numbers and flags as they are (NaN when unknown: the trees route missing values);
* each text field one-hot over the values seen at least `min_count` times in training (at most
  `max_values` per field); an unseen or missing value sets none of them;
* derived shares of decayed channel use: digital (web, app) and assisted (branch, phone), the
  customer's style, which the counts alone give only as a ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from engine.facts import FIELDS, FactType
from feature_store.offline.replay import FeatureValue, feature_columns

FloatArray = npt.NDArray[np.float64]

_TEXT_FIELDS = frozenset(name for name, spec in FIELDS.items() if spec.type is FactType.TEXT)
_USAGE = "profile.channel_usage."
_DIGITAL = (f"{_USAGE}web", f"{_USAGE}mobile_app")
_ASSISTED = (f"{_USAGE}branch", f"{_USAGE}call_center")
DERIVED = ("derived.digital_share", "derived.assisted_share")


@dataclass(frozen=True)
class _Layout:
    """Where each part of the encoding goes, computed once per encoder."""

    width: int
    text_positions: dict[str, dict[object, int]]
    usage: npt.NDArray[np.int_]  # positions of the channel usage columns in `numeric`
    digital: npt.NDArray[np.int_]  # positions of web and app among the usage columns
    assisted: npt.NDArray[np.int_]  # positions of branch and call centre among them


@dataclass(frozen=True)
class FeatureEncoder:
    """`numeric` columns as they are, then one flag per `text[column]` value, then `DERIVED`."""

    numeric: tuple[str, ...]
    text: Mapping[str, tuple[str, ...]]

    @classmethod
    def fit(cls, examples: pd.DataFrame, *, min_count: int, max_values: int) -> FeatureEncoder:
        """The text vocabularies of `examples` (the training rows only)."""
        columns = feature_columns()
        text: dict[str, tuple[str, ...]] = {}
        for column in columns:
            if column not in _TEXT_FIELDS:
                continue
            counts = examples[column].dropna().astype(str).value_counts()
            frequent = sorted(
                (-int(count), str(value)) for value, count in counts.items() if count >= min_count
            )
            text[column] = tuple(sorted(value for _, value in frequent[:max_values]))
        numeric = tuple(column for column in columns if column not in _TEXT_FIELDS)
        return cls(numeric=numeric, text=text)

    @property
    def names(self) -> list[str]:
        """The encoded column names, in order."""
        flags = [f"{column}={value}" for column, values in self.text.items() for value in values]
        return [*self.numeric, *flags, *DERIVED]

    def encode_frame(self, examples: pd.DataFrame) -> FloatArray:
        """One encoded row per row of `examples` (columns of `feature_columns()`)."""
        numbers = examples[list(self.numeric)].to_numpy(dtype=np.float64, na_value=np.nan)
        texts = {column: examples[column].tolist() for column in self.text}
        return self.encode(numbers, texts)

    def encode_features(self, features: Mapping[str, FeatureValue]) -> FloatArray:
        """The encoded row (shape (1, n)) of `flatten_facts(facts)`."""
        numbers = np.array([[_number(features[column]) for column in self.numeric]])
        texts = {column: [features[column]] for column in self.text}
        return self.encode(numbers, texts)

    def encode(self, numbers: FloatArray, texts: Mapping[str, Sequence[object]]) -> FloatArray:
        """Numbers (n, len(numeric)) and text values (n of them) per text column, encoded."""
        layout = self._layout
        encoded = np.zeros((len(numbers), layout.width))
        encoded[:, : len(self.numeric)] = numbers
        rows: list[int] = []
        flags: list[int] = []
        for column, positions in layout.text_positions.items():
            for row, value in enumerate(texts[column]):
                flag = positions.get(value)
                if flag is not None:
                    rows.append(row)
                    flags.append(flag)
        encoded[rows, flags] = 1.0
        usage = numbers[:, layout.usage]
        usage = np.where(np.isnan(usage), 0.0, usage)
        total = usage.sum(axis=1, keepdims=True)
        parts = np.column_stack(
            [usage[:, layout.digital].sum(axis=1), usage[:, layout.assisted].sum(axis=1)]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            encoded[:, -len(DERIVED) :] = np.where(total > 0, parts / total, np.nan)
        return encoded

    @cached_property
    def _layout(self) -> _Layout:
        usage = [column for column in self.numeric if column.startswith(_USAGE)]
        text_positions: dict[str, dict[object, int]] = {}
        next_column = len(self.numeric)
        for column, values in self.text.items():
            text_positions[column] = {value: next_column + i for i, value in enumerate(values)}
            next_column += len(values)
        position = {column: index for index, column in enumerate(self.numeric)}
        return _Layout(
            width=next_column + len(DERIVED),
            text_positions=text_positions,
            usage=np.array([position[c] for c in usage], dtype=int),
            digital=np.array([usage.index(c) for c in _DIGITAL], dtype=int),
            assisted=np.array([usage.index(c) for c in _ASSISTED], dtype=int),
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready form, read back by `from_description`."""
        return {"numeric": list(self.numeric), "text": {k: list(v) for k, v in self.text.items()}}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> FeatureEncoder:
        numeric = tuple(str(column) for column in description["numeric"])
        text = {str(k): tuple(str(v) for v in values) for k, values in description["text"].items()}
        known = set(feature_columns())
        unknown = sorted({*numeric, *text} - known)
        if unknown:
            raise ValueError(f"features unknown to this version of Rapport: {unknown}")
        if any(column in _TEXT_FIELDS for column in numeric) or not set(text) <= _TEXT_FIELDS:
            raise ValueError("a text feature is encoded as a number, or the reverse")
        return cls(numeric=numeric, text=text)


def _number(value: FeatureValue) -> float:
    return math.nan if value is None or isinstance(value, str) else float(value)


def action_block(action_ids: Sequence[str], actions: Sequence[str]) -> FloatArray:
    """One-hot rows of `action_ids` over `actions` (an unknown id sets none)."""
    index = {action: position for position, action in enumerate(actions)}
    block = np.zeros((len(action_ids), len(actions)))
    for row, action_id in enumerate(action_ids):
        position = index.get(action_id)
        if position is not None:
            block[row, position] = 1.0
    return block
