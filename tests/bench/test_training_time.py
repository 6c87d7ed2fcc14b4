"""The training-time benchmark runs end to end at a tiny size (what it measures is not
asserted: only that every phase ran and reported)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.training_time import main


def test_a_tiny_run_reports_every_phase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    main(
        events=6_000,
        decisions_per_customer=8,
        shard_customers=50,  # two shards: ids made unique across them
        days=60,
        seed=3,
        threads=1,
        learning_curve=0,
        score=20,
        report=report,
    )
    figures = json.loads(report.read_text())
    assert set(figures["timings"]) == {"simulate", "examples", "train"}
    assert all(t["seconds"] > 0 for t in figures["timings"].values())
    assert figures["population_events"] > 4_000
    assert figures["decisions"] > 500
    assert figures["example_rows"] > 0
    assert 0.5 < figures["holdout"]["holdout.auc"] <= 1.0
    assert figures["scoring"]["decisions"] == 20
    assert figures["scoring"]["actions"] == 16
    assert figures["scoring"]["p50_us"] > 0
    assert "trained in" in capsys.readouterr().out
