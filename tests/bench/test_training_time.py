"""The training-time benchmark runs end to end at a tiny size. How long the phases take is not
asserted (the machine is shared); that the figures are this run's is: every phase timed, the
phases within the run's own wall clock and CPU time, the training's stages within its phase,
and the printed figures those of the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.training_time import EVENTS_PER_CUSTOMER, main
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue

ROUNDING = 0.01  # the report rounds seconds to 2 decimals


def test_a_tiny_run_reports_every_phase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    began, cpu_began = time.perf_counter(), time.process_time()
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
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    figures = json.loads(report.read_text())
    timings = figures["timings"]
    printed = capsys.readouterr().out

    assert set(timings) == {"simulate", "examples", "train"}
    assert all(t["seconds"] > 0 and t["cpu_seconds"] > 0 for t in timings.values())
    # Phases timed apart, within the run that contains them.
    assert sum(t["seconds"] for t in timings.values()) <= wall + 3 * ROUNDING
    assert sum(t["cpu_seconds"] for t in timings.values()) <= cpu + 3 * ROUNDING
    stages = figures["train_stages"]
    assert {"seconds.affinity", "seconds.propensity", "seconds.evaluate"} <= set(stages)
    assert sum(stages.values()) <= timings["train"]["seconds"] + ROUNDING
    customers = round(6_000 * 180 / 60 / EVENTS_PER_CUSTOMER)
    assert figures["decisions"] == customers * 8
    assert figures["population_events"] > 4_000
    assert figures["logged_events"] > figures["population_events"]
    assert figures["example_rows"] > 0
    assert 0.5 < figures["holdout"]["holdout.auc"] <= 1.0
    scoring = figures["scoring"]
    actions = len(load_catalogue(RETAIL_BANK_CATALOGUE).actions)  # every catalogue action scored
    assert (scoring["decisions"], scoring["actions"]) == (20, actions)
    assert 0 < scoring["p50_us"] <= scoring["p99_us"]
    assert scoring["defaults_p50_us"] > 0
    assert f"trained in {timings['train']['seconds']:.1f} s" in printed
    assert f"examples: {figures['example_rows']:,} rows" in printed
