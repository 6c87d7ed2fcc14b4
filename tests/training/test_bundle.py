"""The model bundle on disk: a round trip scores identically, and anything wrong with the
folder (a changed, corrupt, missing or foreign file) is refused with `BundleInvalid`."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import decide
from engine.decision import Decision, DecisionRequest
from engine.events import Channel
from engine.facts import facts_for
from engine.fold import apply_in_place, new_profile
from engine.habits import usual_requests
from engine.profile import Profile
from engine.scoring import Scorer
from feature_store.offline.replay import feature_columns
from training.bundle import FORMAT_VERSION, BundleInvalid, ModelBundle
from training.simulation.logged_data import simulated_examples, simulated_logs
from training.train import TrainConfig, train

CUSTOMERS, DECISIONS, SEED = 150, 3_000, 2  # as tests/training/test_models.py: one simulation


@pytest.fixture(scope="module")
def examples() -> pd.DataFrame:
    return simulated_examples(CUSTOMERS, DECISIONS, SEED)


@pytest.fixture(scope="module")
def bundle(examples: pd.DataFrame) -> ModelBundle:
    return train(examples, config=TrainConfig(learning_curve_points=0)).bundle


@pytest.fixture(scope="module")
def saved(bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bundle") / "rapport-nba"
    bundle.save(directory)
    return directory


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    """A copy of the saved bundle, free to spoil."""
    return Path(shutil.copytree(saved, tmp_path / "copy"))


class Moment:
    """A logged decision with defaults, and the customer's profile as it stood then."""

    def __init__(self) -> None:
        logs = simulated_logs(CUSTOMERS, DECISIONS, SEED)
        decision = next(d for d in reversed(logs.decisions) if d.defaults and d.actions)
        self.profile: Profile = new_profile(decision.customer_id)
        for event in sorted(logs.events, key=lambda e: (e.occurred_at, e.event_id)):
            if (
                event.customer_id == decision.customer_id
                and event.occurred_at < decision.decided_at
            ):
                apply_in_place(self.profile, event, EngineConfig(), known_new=True)
        self.at = decision.decided_at
        self.segment = str(decision.segment)
        self.request = DecisionRequest(
            customer_id=decision.customer_id,
            touchpoint=decision.touchpoint,
            channel=Channel(decision.touchpoint_channel),
            context=decision.context,
        )


@pytest.fixture(scope="module")
def moment() -> Moment:
    return Moment()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replace_file(directory: Path, name: str, content: bytes) -> None:
    """Write `content` as `name` and record its checksum in the manifest, as a careless or
    hostile writer could: only the loader's own checks stand in the way."""
    (directory / name).write_bytes(content)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name] = sha256(directory / name)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


# ---- round trip ----


def test_a_loaded_bundle_scores_exactly_as_the_trained_one(
    bundle: ModelBundle, saved: Path, examples: pd.DataFrame, moment: Moment
) -> None:
    loaded = ModelBundle.load(saved, version="rapport-nba/3")
    assert loaded.model_version == "rapport-nba/3"
    assert loaded.content_digest() == bundle.content_digest()
    actions = examples.loc[examples["item_kind"] == "action"]
    np.testing.assert_array_equal(loaded.predict_actions(actions), bundle.predict_actions(actions))
    defaults = examples.loc[examples["item_kind"] == "default"]
    original, reloaded = bundle.predict_defaults(defaults), loaded.predict_defaults(defaults)
    assert original is not None
    assert reloaded is not None
    np.testing.assert_array_equal(reloaded, original)
    facts = facts_for(moment.profile, moment.request, at=moment.at, config=EngineConfig())
    action_ids = [*bundle.propensity.actions, "an_action_added_since"]
    served = loaded.action_posteriors(
        action_ids, facts=facts, segment=moment.segment, request=moment.request
    )
    assert served == bundle.action_posteriors(
        action_ids, facts=facts, segment=moment.segment, request=moment.request
    )
    habits = usual_requests(moment.profile, EngineConfig())
    assert loaded.default_acceptance(habits, request=moment.request) == bundle.default_acceptance(
        habits, request=moment.request
    )


def test_the_manifest_describes_the_bundle(bundle: ModelBundle, saved: Path) -> None:
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["feature_columns"] == feature_columns()
    assert manifest["action_ids"] == list(bundle.propensity.actions)
    assert manifest["model_version"] == bundle.model_version
    assert manifest["metrics"] == bundle.metrics
    assert manifest["created_at"].startswith(bundle.created_at.date().isoformat())
    files = sorted(p.name for p in saved.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == files
    assert all(manifest["files"][name] == sha256(saved / name) for name in files)
    assert ModelBundle.load(saved).model_version == bundle.model_version


def test_posteriors_carry_the_probability_with_a_pseudo_count(
    bundle: ModelBundle, moment: Moment
) -> None:
    facts = facts_for(moment.profile, moment.request, at=moment.at, config=EngineConfig())
    actions = list(bundle.propensity.actions)
    posteriors = bundle.action_posteriors(
        [*actions, "unseen"], facts=facts, segment=moment.segment, request=moment.request
    )
    for action_id, (alpha, beta) in zip(actions, posteriors, strict=False):
        assert alpha > 0
        assert beta > 0
        assert alpha + beta == pytest.approx(bundle.strength[action_id])
        assert 2.0 <= alpha + beta <= 50.0
    alpha, beta = posteriors[-1]
    assert alpha + beta == pytest.approx(2.0)
    assert alpha / (alpha + beta) == pytest.approx(bundle.unseen_action_rate)


def test_the_engine_decides_with_the_bundle(bundle: ModelBundle, moment: Moment) -> None:
    assert isinstance(bundle, Scorer)
    named = bundle.with_version("rapport-nba/3")

    def decision(min_acceptance: float) -> Decision:
        return decide(
            moment.profile,
            moment.request,
            prior=ChannelPrior.from_counts({}),
            config=EngineConfig(min_default_acceptance=min_acceptance),
            decision_id="d-1",
            at=moment.at,
            scorer=named,
        )

    everything, nothing = decision(0.0), decision(1.0)
    assert everything.model_version == "rapport-nba/3"
    assert everything.defaults
    assert nothing.defaults == []


# ---- refused ----


def test_a_changed_file_is_refused(copy: Path) -> None:
    path = copy / "propensity.npz"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(BundleInvalid, match=r"propensity\.npz: checksum mismatch"):
        ModelBundle.load(copy)


@pytest.mark.parametrize("name", ["affinity.npz", "model.json", "manifest.json"])
def test_a_missing_file_is_refused(copy: Path, name: str) -> None:
    (copy / name).unlink()
    with pytest.raises(BundleInvalid, match=rf"{name}: missing"):
        ModelBundle.load(copy)


def test_a_corrupt_file_is_refused_even_with_its_checksum(copy: Path) -> None:
    replace_file(copy, "propensity.npz", b"PK\x03\x04 not really a zip archive")
    with pytest.raises(BundleInvalid, match=r"propensity\.npz: unreadable"):
        ModelBundle.load(copy)


def test_a_pickled_array_is_never_unpickled(copy: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("code from the artifact ran",))

    arrays = dict(np.load(copy / "default_acceptance.npz"))
    arrays["value"] = np.array([Payload()], dtype=object)
    replace_file(copy, "default_acceptance.npz", npz_bytes(**arrays))
    with pytest.raises(BundleInvalid, match=r"default_acceptance\.npz: unreadable"):
        ModelBundle.load(copy)


def test_trees_that_do_not_form_trees_are_refused(copy: Path) -> None:
    arrays = dict(np.load(copy / "propensity.npz"))
    arrays["left"] = arrays["left"].copy()
    arrays["left"][0] = len(arrays["left"]) + 7  # a child outside the nodes
    replace_file(copy, "propensity.npz", npz_bytes(**arrays))
    with pytest.raises(BundleInvalid, match="outside the node arrays"):
        ModelBundle.load(copy)


def test_affinities_that_do_not_match_their_index_are_refused(copy: Path) -> None:
    index = json.loads((copy / "affinity_index.json").read_text())
    index["customers"] = index["customers"][:-1]
    replace_file(copy, "affinity_index.json", json.dumps(index).encode())
    with pytest.raises(BundleInvalid, match="does not match the factor rows"):
        ModelBundle.load(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format version 2"),
        ({"format": "something-else"}, "not a rapport-model-bundle manifest"),
        ({"feature_columns": ["context.hour"]}, "other feature columns"),
        ({"action_ids": ["usual_withdrawal"]}, "action ids are not the model's"),
        ({"files": {"../../etc/passwd": "0" * 64}}, "unknown file"),
    ],
)
def test_a_foreign_or_inconsistent_manifest_is_refused(
    copy: Path, change: dict[str, object], message: str
) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    if "files" in change:
        manifest["files"].update(change["files"])  # type: ignore[call-overload]
    else:
        manifest.update(change)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleInvalid, match=message):
        ModelBundle.load(copy)


def test_a_manifest_that_is_not_json_is_refused(copy: Path) -> None:
    (copy / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleInvalid, match=r"manifest\.json: unreadable"):
        ModelBundle.load(copy)
