"""`rapport experiments`: analyse a per-unit CSV, load definitions, write the review report."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.serving import decide_for, record_outcome
from api.settings import Settings
from engine.decision import DecisionRequest
from engine.events import Channel, OutcomeKind
from experiments.assignment import ExperimentAssigner
from experiments.registry import get_experiment
from feature_store.factory import open_experiment_registry, open_store

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def runner(settings: Settings) -> CliRunner:
    return CliRunner(env={"RAPPORT_STORE": settings.store, "COLUMNS": "200"})


def rapport(runner: CliRunner, *args: str, exit_code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == exit_code, result.output
    return result.output


def units_csv(tmp_path: Path, *, covariate: bool) -> Path:
    rng = np.random.default_rng(2)
    rows = []
    for variant, rate in (("control", 0.10), ("treatment", 0.14)):
        for _ in range(3000):
            value = float(rng.random() < rate)
            rows.append(
                {"variant": variant, "value": value, "covariate": value + rng.normal(0, 0.3)}
            )
    frame = pd.DataFrame(rows)
    path = tmp_path / "units.csv"
    (frame if covariate else frame.drop(columns="covariate")).to_csv(path, index=False)
    return path


def test_analyze_prints_the_analysis_as_json(runner: CliRunner, tmp_path: Path) -> None:
    output = rapport(
        runner, "experiments", "analyze", "--input", str(units_csv(tmp_path, covariate=False))
    )

    result = json.loads(output)
    assert result["control"] == "control"
    assert [v["units"] for v in result["variants"]] == [3000, 3000]
    [comparison] = result["comparisons"]
    assert comparison["test"] == "two_proportion_z"
    assert comparison["significant"]
    assert result["sample_ratio"]["mismatch"] is False


def test_analyze_takes_the_control_cuped_and_sequential_options(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = str(units_csv(tmp_path, covariate=True))
    fixed = json.loads(rapport(runner, "experiments", "analyze", "--input", path))
    output = rapport(
        runner, "experiments", "analyze", "--input", path, "--control", "treatment",
        "--sequential", "--weights", "control=1,treatment=1",
    )  # fmt: skip

    result = json.loads(output)
    assert (fixed["control"], result["control"]) == ("control", "treatment")
    [comparison] = result["comparisons"]
    assert (comparison["treatment"], comparison["control"]) == ("control", "treatment")
    assert comparison["absolute_lift"]["estimate"] < 0  # control converts less (10 % vs 14 %)
    assert 0.3 < result["cuped"]["variance_reduction"] < 1
    assert comparison["test"] == "welch_t"  # CUPED-adjusted values are compared as means
    # --sequential: an always-valid result, more conservative than the fixed-horizon one, and
    # the one that decides significance.
    assert fixed["sequential"] is False
    assert fixed["comparisons"][0]["always_valid"] is None
    assert result["sequential"] is True
    always_valid = comparison["always_valid"]
    assert comparison["p_value"] < always_valid["p_value"] < 0.05
    assert comparison["significant"] is True
    lift = comparison["absolute_lift"]
    assert always_valid["ci_low"] < lift["ci_low"] < lift["ci_high"] < always_valid["ci_high"]
    assert always_valid["mixture_sd"] > 0


def test_analyze_checks_the_sample_ratio_against_the_given_weights(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = str(units_csv(tmp_path, covariate=False))  # 3000 units in each variant

    def sample_ratio(*weights: str) -> dict[str, object]:
        output = rapport(runner, "experiments", "analyze", "--input", path, *weights)
        check: dict[str, object] = json.loads(output)["sample_ratio"]
        return check

    equal = sample_ratio("--weights", "control=1,treatment=1")
    skewed = sample_ratio("--weights", "control=3,treatment=1")

    assert equal["expected_shares"] == {"control": 0.5, "treatment": 0.5}
    assert equal["mismatch"] is False
    assert skewed["expected_shares"] == {"control": 0.75, "treatment": 0.25}
    assert skewed["chi_square"] == pytest.approx(2000)  # (3000-4500)²/4500 + (3000-1500)²/1500
    assert skewed["mismatch"] is True
    assert sample_ratio() == equal  # no weights: equal shares
    bad = runner.invoke(app, ["experiments", "analyze", "--input", path, "--weights", "control"])
    assert bad.exit_code != 0
    assert "expected NAME=WEIGHT" in bad.output


def test_analyze_names_the_column_at_fault(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("variant,value\nA,1\nA,0\nB,yes\nB,0\n", encoding="utf-8")

    result = runner.invoke(app, ["experiments", "analyze", "--input", str(path)])

    assert result.exit_code == 1
    assert "column 'value' must be numeric" in result.output


YAML = f"""
experiments:
  - id: cli-exp
    hypothesis: The personalised arm converts more.
    start: {(NOW - timedelta(days=2)).isoformat()}
    variants:
      - {{name: holdout, weight: 1, personalisation: false}}
      - {{name: personalised, weight: 1}}
"""


def test_load_then_report_writes_the_review(
    runner: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    definitions = tmp_path / "experiments.yaml"
    definitions.write_text(YAML, encoding="utf-8")
    rapport(runner, "experiments", "load", str(definitions))
    with (
        closing(open_experiment_registry(settings.store)) as registry,
        closing(open_store(settings.store, settings.engine)) as store,
    ):
        experiment = get_experiment(registry, "cli-exp")
        assigner = ExperimentAssigner([experiment], policy=settings.decision_policy())
        for i in range(30):
            request = DecisionRequest(customer_id=f"c{i}", touchpoint="web-1", channel=Channel.WEB)
            decision = decide_for(store, request, at=NOW - timedelta(hours=i), assigner=assigner)
            if decision.actions and i % 3 == 0:
                record_outcome(
                    store,
                    decision.decision_id,
                    decision.actions[0].id,
                    OutcomeKind.ACCEPTED,
                    at=NOW,
                )

    html, data = tmp_path / "out" / "report.html", tmp_path / "report.json"
    output = rapport(runner, "experiments", "report", "cli-exp", "--out", str(html))
    rapport(runner, "experiments", "report", "cli-exp", "--out", str(data), "--candidate", "none")

    assert "Keep running" in output
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "Experiment <code>cli-exp</code>" in page
    review = json.loads(data.read_text(encoding="utf-8"))
    assert sum(row["exposures"] for row in review["variants"]) == 30
    assert review["offpolicy"] is None
    listed = rapport(runner, "experiments", "list")
    assert json.loads(listed.splitlines()[0])["id"] == "cli-exp"


def test_report_of_an_unknown_experiment_fails_clearly(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["experiments", "report", "nope", "--out", str(tmp_path / "r.html")]
    )

    assert result.exit_code == 1
    assert "nope" in result.output


def test_load_names_the_bad_field(runner: CliRunner, tmp_path: Path) -> None:
    definitions = tmp_path / "experiments.yaml"
    definitions.write_text(YAML.replace("weight: 1}", "weight: -1}", 1), encoding="utf-8")

    result = runner.invoke(app, ["experiments", "load", str(definitions)])

    assert result.exit_code == 1
    assert "experiments.0.variants.1.weight" in result.output
