"""The model bundle: what training produces and what a decision's arbitration scores with.

A `ModelBundle` implements `engine.scoring.Scorer` (in place of the online smoothed rates) with
three models: the propensity classifier (`training.propensity`), the customers' affinities
(`training.affinity`: ALS, past answers and segment rates, features of the classifier) and
default acceptance (`training.default_acceptance`). Serving computes features exactly as
training did: `feature_store.offline.replay.flatten_facts(facts)` through the classifier's own
encoder.
Scoring a decision is in-process numpy, about 0.2 ms for 16 actions (bench/training_time.py).

Posteriors: for an action with model probability p, Beta(p * n, (1 - p) * n), where the
pseudo-count n is the number of training rows of that action, capped at `max_strength` (50 by
default) and at least 2: Thompson sampling explores an action the model knows little about more.
An action the model has never seen (added to the catalogue since training) gets the training
acceptance rate of all actions with n = 2.

On disk, a folder of plain files:

    manifest.json            format version, created_at, model version, feature columns,
                             action ids, metrics, params, dataset, sha256 of every other file
    model.json               encoders' vocabularies, actions, posterior pseudo-counts
    propensity.npz           trees and calibration of the propensity classifier
    affinity.npz             ALS factors and the customers' answer counts
    affinity_index.json      customer digests and item names of their rows, rates by segment
    default_acceptance.npz   trees and calibration of default acceptance (optional)

Loading runs no code from the artifact: JSON is parsed, arrays are read with
`np.load(allow_pickle=False)`, and nothing is unpickled (no pickle, joblib or skops: the
scikit-learn classifiers are exported to arrays, see `training.tree_ensemble`). `load` verifies
the format version, every checksum, the shapes of every array and that the feature columns are
this version of Rapport's; any problem raises `BundleInvalid`, and nothing half-loaded escapes.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from engine.decision import DecisionRequest
from engine.facts import Facts
from engine.habits import UsualRequest
from feature_store.offline.replay import feature_columns, flatten_facts
from training.affinity import AffinityModel
from training.default_acceptance import DefaultAcceptanceModel
from training.propensity import PropensityModel

FloatArray = npt.NDArray[np.float64]
FORMAT: Literal["rapport-model-bundle"] = "rapport-model-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.json"
PROPENSITY_FILE = "propensity.npz"
AFFINITY_FILE = "affinity.npz"
AFFINITY_INDEX_FILE = "affinity_index.json"
DEFAULTS_FILE = "default_acceptance.npz"
_KNOWN_FILES = frozenset(
    {MODEL_FILE, PROPENSITY_FILE, AFFINITY_FILE, AFFINITY_INDEX_FILE, DEFAULTS_FILE}
)
#: Pseudo-count of an action the bundle has never seen: the least there is.
MIN_STRENGTH = 2.0
MODEL_NAME = "rapport-nba"


class BundleInvalid(ValueError):
    """A bundle folder that cannot be served: the message says which file and why."""


class Manifest(BaseModel):
    """`manifest.json`."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["rapport-model-bundle"] = FORMAT
    format_version: int = FORMAT_VERSION
    model_version: str
    created_at: AwareDatetime
    feature_columns: list[str]
    action_ids: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str | float | int] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="File name -> sha256 hex digest.")


class ModelBundle:
    """Trained acceptance models, served in-process (see the module docstring)."""

    def __init__(
        self,
        *,
        propensity: PropensityModel,
        strength: Mapping[str, float],
        unseen_action_rate: float,
        affinity: AffinityModel,
        defaults: DefaultAcceptanceModel | None = None,
        created_at: datetime | None = None,
        model_version: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str | float | int] | None = None,
        dataset: Mapping[str, Any] | None = None,
    ) -> None:
        self.propensity, self.affinity, self.defaults = propensity, affinity, defaults
        self.strength = {action: float(strength[action]) for action in propensity.actions}
        self.unseen_action_rate = float(unseen_action_rate)
        self.created_at = created_at or datetime.now(UTC)
        self.metrics: dict[str, float] = dict(metrics or {})
        self.params: dict[str, str | float | int] = dict(params or {})
        self.dataset: dict[str, Any] = dict(dataset or {})
        self._version = model_version
        self._known = frozenset(propensity.actions)
        self._digest: str | None = None

    # -- engine.scoring.Scorer ------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """The registry's name for this bundle (e.g. 'rapport-nba/3'), else one derived from
        the models' content: `rapport-nba@<12 hex digits>`."""
        return self._version or f"{MODEL_NAME}@{self.content_digest()[:12]}"

    def action_posteriors(
        self,
        action_ids: Sequence[str],
        *,
        facts: Facts,
        segment: str,
        request: DecisionRequest,
    ) -> list[tuple[float, float]]:
        if not action_ids:
            return []
        encoded = self.propensity.encoder.encode_features(flatten_facts(facts))
        affinity = self.affinity.features(request.customer_id, action_ids, segment)
        rows = PropensityModel.design(
            np.repeat(encoded, len(action_ids), axis=0),
            action_ids,
            self.propensity.actions,
            affinity,
        )
        probabilities = self.propensity.probability(rows).tolist()
        return [self._posterior(a, p) for a, p in zip(action_ids, probabilities, strict=True)]

    def default_acceptance(
        self, habits: Sequence[UsualRequest], *, request: DecisionRequest
    ) -> list[float] | None:
        """P(accepted) of each habit as a default; None without a default-acceptance model."""
        if self.defaults is None:
            return None
        if not habits:
            return []
        requested = request.context.get("request")
        return self.defaults.habit_probability(
            habits, requested if isinstance(requested, str) else None
        )

    def _posterior(self, action_id: str, probability: float) -> tuple[float, float]:
        if action_id not in self._known:
            probability, strength = self.unseen_action_rate, MIN_STRENGTH
        else:
            strength = self.strength[action_id]
        return probability * strength, (1.0 - probability) * strength

    # -- scoring logged examples (training.evaluate.FrameScorer) --------------------------

    def predict_actions(self, examples: pd.DataFrame) -> FloatArray:
        """P(accept) of each example's action (`item_id`) given its features."""
        affinity = self.affinity.frame_features(
            examples["customer_id"].astype(str).tolist(),
            examples["item_id"].astype(str).tolist(),
            examples["segment"].astype(str).tolist(),
        )
        probability = self.propensity.frame_probability(examples, affinity)
        unseen = ~examples["item_id"].isin(self._known).to_numpy(dtype=bool)
        probability[unseen] = self.unseen_action_rate
        return probability

    def predict_defaults(self, examples: pd.DataFrame) -> FloatArray | None:
        """P(accepted) of each example's default; None without a default-acceptance model."""
        return None if self.defaults is None else self.defaults.frame_probability(examples)

    # -- identity and files ---------------------------------------------------------------

    def with_version(self, version: str) -> ModelBundle:
        """The same models under the registry's name for them."""
        copy = ModelBundle.__new__(ModelBundle)
        copy.__dict__.update(self.__dict__)
        copy._version = version
        return copy

    def content_digest(self) -> str:
        """sha256 over the models' arrays and descriptions (not the metrics); computed once."""
        if self._digest is None:
            digest = hashlib.sha256()
            for name, payload in sorted(self._payloads().items()):
                digest.update(name.encode())
                digest.update(_canonical(payload))
            self._digest = digest.hexdigest()
        return self._digest

    def save(self, directory: Path) -> None:
        """Write the bundle's files into `directory` (created if needed), the manifest last."""
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for name, payload in self._payloads().items():
            path = directory / name
            if isinstance(payload, dict) and name.endswith(".npz"):
                np.savez_compressed(path, **payload)
            else:
                path.write_text(json.dumps(payload, indent=1, sort_keys=True))
            files[name] = _sha256(path)
        manifest = Manifest(
            model_version=self.model_version,
            created_at=self.created_at,
            feature_columns=feature_columns(),
            action_ids=list(self.propensity.actions),
            metrics=self.metrics,
            params=self.params,
            dataset=self.dataset,
            files=files,
        )
        (directory / MANIFEST).write_text(manifest.model_dump_json(indent=1))

    def _payloads(self) -> dict[str, Any]:
        payloads: dict[str, Any] = {
            MODEL_FILE: {
                "propensity": self.propensity.describe(),
                "strength": self.strength,
                "unseen_action_rate": self.unseen_action_rate,
                "defaults": self.defaults.describe() if self.defaults is not None else None,
            },
            PROPENSITY_FILE: self.propensity.arrays(),
            AFFINITY_FILE: self.affinity.arrays(),
            AFFINITY_INDEX_FILE: self.affinity.index(),
        }
        if self.defaults is not None:
            payloads[DEFAULTS_FILE] = self.defaults.arrays()
        return payloads

    @classmethod
    def load(cls, directory: Path, *, version: str | None = None) -> ModelBundle:
        """The bundle saved in `directory`, verified (see the module docstring); `version`
        (e.g. 'rapport-nba/3') becomes its `model_version`, else the manifest's.
        Raises `BundleInvalid`."""
        manifest = _read_manifest(directory)
        for name, expected in manifest.files.items():
            if name not in _KNOWN_FILES:
                raise BundleInvalid(f"{directory}: the manifest lists an unknown file {name!r}")
            path = directory / name
            if not path.is_file():
                raise BundleInvalid(f"{path}: missing")
            if _sha256(path) != expected:
                raise BundleInvalid(f"{path}: checksum mismatch (changed since it was saved)")
        for required in (MODEL_FILE, PROPENSITY_FILE, AFFINITY_FILE, AFFINITY_INDEX_FILE):
            if required not in manifest.files:
                raise BundleInvalid(f"{directory}: the manifest does not list {required}")
        if manifest.feature_columns != feature_columns():
            raise BundleInvalid(
                f"{directory}: trained on other feature columns than this version of Rapport "
                "computes; retrain the bundle"
            )
        bundle = _read_models(directory, manifest)
        if list(bundle.propensity.actions) != manifest.action_ids:
            raise BundleInvalid(f"{directory}: the manifest's action ids are not the model's")
        bundle._version = version or manifest.model_version
        _smoke_test(bundle, directory)
        return bundle


def _read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleInvalid(f"{path}: missing (not a model bundle folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleInvalid(f"{path}: unreadable: {error}") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleInvalid(f"{path}: not a {FORMAT} manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleInvalid(
            f"{path}: format version {data.get('format_version')!r}, this Rapport reads "
            f"{FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise BundleInvalid(f"{path}: {first['msg']} at {first['loc']}") from None


def _read_models(directory: Path, manifest: Manifest) -> ModelBundle:
    try:
        description = _read_json(directory / MODEL_FILE)
        propensity = PropensityModel.from_saved(
            _read_arrays(directory / PROPENSITY_FILE), description["propensity"]
        )
        affinity = AffinityModel.from_saved(
            _read_arrays(directory / AFFINITY_FILE), _read_json(directory / AFFINITY_INDEX_FILE)
        )
        defaults = None
        if description.get("defaults") is not None:
            defaults = DefaultAcceptanceModel.from_saved(
                _read_arrays(directory / DEFAULTS_FILE), description["defaults"]
            )
        strength = {str(a): float(n) for a, n in description["strength"].items()}
        missing = set(propensity.actions) - set(strength)
        if missing or any(not (n >= MIN_STRENGTH and np.isfinite(n)) for n in strength.values()):
            raise ValueError("posterior pseudo-counts are missing or below the minimum")
        rate = float(description["unseen_action_rate"])
        if not 0.0 < rate < 1.0:
            raise ValueError(f"unseen_action_rate {rate} is not in (0, 1)")
    except BundleInvalid:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BundleInvalid(f"{directory}: unloadable model: {error}") from error
    return ModelBundle(
        propensity=propensity,
        strength=strength,
        unseen_action_rate=rate,
        affinity=affinity,
        defaults=defaults,
        created_at=manifest.created_at,
        metrics=manifest.metrics,
        params=manifest.params,
        dataset=manifest.dataset,
    )


def _read_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    if not _SAFE_NAME.match(path.name):
        raise BundleInvalid(f"{path}: not a bundle file name")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise BundleInvalid(f"{path}: unreadable arrays: {error}") from error


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleInvalid(f"{path}: unreadable: {error}") from error
    if not isinstance(data, dict):
        raise BundleInvalid(f"{path}: not a JSON object")
    return data


def _smoke_test(bundle: ModelBundle, directory: Path) -> None:
    """Score one row of unknown features: finite probabilities, or the bundle is refused."""
    rows = np.full((1, bundle.propensity.trees.n_features), np.nan)
    if not np.isfinite(bundle.propensity.probability(rows)).all():
        raise BundleInvalid(f"{directory}: the propensity model gives non-finite probabilities")


_SAFE_NAME = re.compile(r"^[a-z_]+\.(npz|json)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(payload: Any) -> bytes:
    if isinstance(payload, dict) and all(isinstance(v, np.ndarray) for v in payload.values()):
        digest = hashlib.sha256()
        for name in sorted(payload):
            array = np.ascontiguousarray(payload[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.digest()
    return json.dumps(payload, sort_keys=True).encode()
