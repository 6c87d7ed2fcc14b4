"""Each HTTP and memory bench runs for a second or two with tiny sizes, so that none rots.

Nothing here asserts how fast anything is (the machines are shared and noisy): only that each
bench ran its servers, wrote its JSON with the expected keys, and counted some answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 600

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def run_bench(module: str, out: Path, *options: str) -> Any:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    environment["PYTHONPATH"] = str(REPO)
    completed = subprocess.run(
        [sys.executable, "-m", module, *options, "--out", str(out)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text())


def test_decisions_bench_runs_every_phase(tmp_path: Path) -> None:
    report = run_bench(
        "bench.decisions",
        tmp_path / "decisions.json",
        "--phases", "closed,open,overload,stack",
        "--customers", "10",
        "--duration", "0.5",
        "--rounds", "1",
        "--warmup", "0.2",
        "--open-duration", "0.5",
        "--open-warmup", "0.1",
        "--overload-duration", "0.5",
    )  # fmt: skip
    servers = {"floor", "rapport-redis", "rapport-sqlite"}
    summary = report["closed"]["summary"]
    assert set(summary) == servers
    for name in servers:
        assert summary[name]["rate"] > 0
        assert summary[name]["server_cpu_ms_per_request"] > 0
        assert report["closed"]["rounds"][name][0]["answered"] > 0
    assert summary["floor"]["ratio_to_floor"] == 1
    for store in ("rapport-redis", "rapport-sqlite"):
        runs = report["open"][store]
        assert [run["fraction"] for run in runs] == [0.25, 0.5, 0.9]
        for run in runs:
            assert run["floor"]["count"] > 0
            assert run[store]["count"] > 0
            assert {"p50", "p99", "p99.9"} <= set(run[store]["latency_ms"])
        overload = report["overload"][store]
        assert overload["requests"] > 0
        assert {"goodput", "goodput_to_capacity", "answered_after_deadline"} <= set(overload)
    assert set(report["stack"]["summary"]) == {"floor asyncio+h11", "floor uvloop+httptools"}


def test_ingest_bench_counts_accepted_events(tmp_path: Path) -> None:
    report = run_bench(
        "bench.ingest",
        tmp_path / "ingest.json",
        "--batches", "2",
        "--batch-size", "50",
        "--customers", "20",
    )  # fmt: skip
    for name in ("rapport-redis", "rapport-sqlite"):
        result = report["results"][name]
        assert result["events_accepted"] == 100
        assert result["failed_batches"] == 0
        assert result["events_per_second"] > 0
        assert result["server_cpu_us_per_event"] > 0


def test_memory_bench_reports_bytes_per_customer_and_one_long_history(tmp_path: Path) -> None:
    report = run_bench(
        "bench.redis_memory",
        tmp_path / "redis_memory.json",
        "--customers", "5",
        "--heavy-events", "200",
    )  # fmt: skip
    assert report["events"] > 0
    assert report["bytes_per_customer"] > 0
    assert "profile" in report["by_kind"]
    heavy = report["heavy_customer"]
    assert heavy["events"] == 200
    assert heavy["bytes"] > 0
    assert "profile" in heavy["by_kind"]
