"""Training data and splits: examples read from the offline store are the examples of the logs
(erased customers left out), and time alone splits them, whole decisions at a time."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from engine.config import EngineConfig
from engine.identity import customer_digest
from feature_store.factory import open_store
from feature_store.offline.export import OfflineStore
from training.dataset import DECISION_COLUMNS, examples_from_logs, load_examples
from training.simulation.logged_data import SimulatedLogs, simulated_logs
from training.train import NotEnoughData, TrainConfig, time_split, train

CONFIG = EngineConfig()


@pytest.fixture(scope="module")
def logs() -> SimulatedLogs:
    return simulated_logs(60, 600, 5, days=60)


@pytest.fixture(scope="module")
def examples(logs: SimulatedLogs) -> pd.DataFrame:
    return examples_from_logs(logs.events, logs.decisions, None, CONFIG)


def offline_store(root: Path, logs: SimulatedLogs, erase: str | None = None) -> Path:
    """The logs through the embedded online store, exported as `rapport export` does."""
    with closing(open_store(f"sqlite:///{root / 'online.db'}", CONFIG)) as store:
        store.apply_events(logs.events)
        for decision in logs.decisions:
            store.log_decision(decision)
        if erase is not None:
            store.erase_customer(erase)
        OfflineStore(root / "offline").export(store)
    return root / "offline"


def test_examples_read_from_the_offline_store_are_the_examples_of_the_logs(
    logs: SimulatedLogs, examples: pd.DataFrame, tmp_path: Path
) -> None:
    erased = logs.decisions[0].customer_id
    loaded = load_examples(offline_store(tmp_path, logs, erase=erased), CONFIG)
    expected = examples.loc[examples["customer_id"] != erased].reset_index(drop=True)
    assert erased in set(examples["customer_id"])
    assert erased not in set(loaded["customer_id"])
    assert list(loaded.columns) == list(expected.columns)
    assert set(DECISION_COLUMNS) <= set(loaded.columns)
    compared = ["decision_id", "item_id", "accepted", "declined", *DECISION_COLUMNS]
    pd.testing.assert_frame_equal(loaded[compared], expected[compared])
    numbers = expected.select_dtypes("number").columns
    pd.testing.assert_frame_equal(loaded[numbers], expected[numbers], check_exact=False)


def test_the_replay_is_told_about_erasures_the_store_applied(
    logs: SimulatedLogs, tmp_path: Path
) -> None:
    """Rows of a customer erased after a table was copied aside stay out too."""
    root = offline_store(tmp_path, logs)
    erased = logs.decisions[1].customer_id
    state = root / "_state.json"
    recorded = json.loads(state.read_text())
    recorded["erasures_applied"].append(customer_digest(erased))
    state.write_text(json.dumps(recorded))
    assert erased not in set(load_examples(root, CONFIG)["customer_id"])


def test_time_splits_whole_decisions_the_latest_held_out(examples: pd.DataFrame) -> None:
    split = time_split(examples, TrainConfig(holdout_fraction=0.25, validation_fraction=0.3))
    assert (
        split.train["decided_at"].max() < split.holdout_start <= split.holdout["decided_at"].min()
    )
    assert split.fit["decided_at"].max() < split.validation_start
    assert split.validation_start <= split.validation["decided_at"].min()
    decisions = examples["decision_id"].nunique()
    held = split.holdout["decision_id"].nunique()
    assert abs(held - 0.25 * decisions) <= 2
    assert not set(split.train["decision_id"]) & set(split.holdout["decision_id"])
    assert len(split.train) + len(split.holdout) == len(examples)
    assert len(split.fit) + len(split.validation) == len(split.train)


def test_too_few_decisions_or_missing_columns_are_not_enough(examples: pd.DataFrame) -> None:
    first = examples.loc[examples["decision_id"] == examples["decision_id"].iloc[0]]
    with pytest.raises(NotEnoughData, match="too few"):
        train(first)
    with pytest.raises(NotEnoughData, match="lack the columns"):
        train(examples.drop(columns=["context.hour"]))


def test_plain_replay_examples_train_without_a_default_model(
    logs: SimulatedLogs, examples: pd.DataFrame
) -> None:
    plain = examples.drop(columns=list(DECISION_COLUMNS))
    result = train(plain, config=TrainConfig(learning_curve_points=0))
    assert result.bundle.defaults is None
    assert result.params["defaults.trained"] == 0
    assert "holdout.snips_value" not in result.metrics  # no allowed actions to replay over
    assert "holdout.auc" in result.metrics


def test_examples_carry_what_each_decision_logged(
    logs: SimulatedLogs, examples: pd.DataFrame
) -> None:
    decisions = {d.decision_id: d for d in logs.decisions}
    defaults = examples.loc[examples["item_kind"] == "default"]
    assert len(defaults) > 10
    for row in defaults.itertuples():
        logged = decisions[str(row.decision_id)].default(str(row.item_id))
        assert logged is not None
        assert (row.default_channel, row.default_matches, row.default_window) == (
            logged.channel,
            logged.matches,
            logged.window,
        )
        assert row.default_confidence == logged.confidence
    for row in examples.itertuples():
        decision = decisions[str(row.decision_id)]
        allowed = [c.action_id for c in decision.candidates if c.status != "dropped"]
        assert json.loads(str(row.allowed_actions)) == allowed
    actions = examples.loc[examples["item_kind"] == "action"]
    assert actions["default_matches"].isna().all()
