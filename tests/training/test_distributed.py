"""The replay on a Dask cluster of 2 worker processes gives exactly the single-process examples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client

from engine.config import EngineConfig
from feature_store.factory import open_store
from feature_store.offline.export import OfflineStore
from training.dataset import load_examples
from training.distributed import (
    EXAMPLE_ORDER,
    connect,
    customer_partition,
    distributed_examples,
    partitions_of,
)
from training.simulation.logged_data import SimulatedLogs, simulated_logs

CONFIG = EngineConfig()


@pytest.fixture(scope="module")
def offline_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated log through the embedded online store, exported to Parquet."""
    logs: SimulatedLogs = simulated_logs(40, 300, 5, days=40)
    root = tmp_path_factory.mktemp("distributed")
    with closing(open_store(f"sqlite:///{root / 'online.db'}", CONFIG)) as store:
        store.apply_events(logs.events)
        for decision in logs.decisions:
            store.log_decision(decision)
        store.erase_customer(logs.decisions[0].customer_id)
        OfflineStore(root / "offline").export(store)
    return root / "offline"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with connect(workers=2) as client:
        yield client


def test_two_worker_processes_give_the_single_process_examples_exactly(
    offline_root: Path, client: Client, tmp_path: Path
) -> None:
    single = load_examples(offline_root, CONFIG)
    replay = distributed_examples(client, offline_root, tmp_path / "work", CONFIG, partitions=5)
    assert replay.cluster.workers == 2
    assert len({r.worker for r in replay.reports}) == 2  # both processes replayed partitions
    assert sum(1 for r in replay.reports if r.examples) > 1
    assert len(single) > 100
    pd.testing.assert_frame_equal(replay.examples, single, check_exact=True)
    assert replay.examples[EXAMPLE_ORDER].equals(single[EXAMPLE_ORDER])


def test_each_customer_is_in_one_partition_whatever_the_process(offline_root: Path) -> None:
    events = pd.read_parquet(offline_root / "events")
    ids = pa.array(events["customer_id"].tolist())
    rows = partitions_of(ids, 7)
    assert rows.tolist() == [customer_partition(c, 7) for c in events["customer_id"]]
    spread = Counter(rows.tolist())
    assert len(spread) == 7  # 40 customers fill 7 partitions
    assert set(spread) == set(range(7))


def test_the_run_records_the_cluster_partitioning_and_phases(
    offline_root: Path, client: Client, tmp_path: Path
) -> None:
    replay = distributed_examples(client, offline_root, tmp_path / "work", CONFIG, partitions=3)
    params = replay.params()
    assert params["dask.workers"] == 2
    assert params["dask.threads"] == 2
    assert params["replay.partitions"] == 3
    assert params["replay.events"] == len(pd.read_parquet(offline_root / "events"))
    assert {"phase.split_seconds", "phase.replay_seconds", "phase.gather_seconds"} <= set(params)


def test_rapport_train_on_a_scheduler_records_the_cluster_in_mlflow(
    client: Client, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from api.cli import app
    from tests.training.test_registry import (
        empty_mlflow_store,
        simulated_logs,
        write_offline_store,
    )

    offline = write_offline_store(tmp_path, simulated_logs())
    uri = empty_mlflow_store(tmp_path / "mlflow", tmp_path_factory.getbasetemp())
    runner = CliRunner(
        env={
            "RAPPORT_MLFLOW_URI": uri,
            "RAPPORT_MLFLOW_ARTIFACTS": str(tmp_path / "mlflow" / "artifacts"),
            "RAPPORT_STORE": f"sqlite:///{tmp_path / 'rapport.db'}",
            "RAPPORT_DASK_SCHEDULER": client.scheduler.address,
            "COLUMNS": "200",
        }
    )
    result = runner.invoke(app, ["train", "--offline", str(offline), "--partitions", "4"])
    assert result.exit_code == 0, result.output
    [run] = MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=uri).search_experiments()]
    )
    params = run.data.params
    assert params["replay.mode"] == "dask"
    assert params["dask.scheduler"] == client.scheduler.address
    assert params["dask.workers"] == "2"
    assert params["dask.threads"] == "2"
    assert params["replay.partitions"] == "4"
    assert float(params["phase.replay_seconds"]) > 0
    assert float(params["phase.train_seconds"]) > 0
    assert run.data.tags["rapport.replay"] == "dask"
    assert sorted(p.name for p in (offline / "_replay" / "examples").iterdir()) == [
        f"part-{n:05d}.parquet" for n in range(4)
    ]


def test_a_file_of_an_unknown_schema_version_stops_the_replay(
    offline_root: Path, client: Client, tmp_path: Path
) -> None:
    import shutil

    import pyarrow.parquet as pq

    from feature_store.offline.columnar import SCHEMA_VERSION_KEY, UnsupportedSchema

    copy = tmp_path / "offline"
    shutil.copytree(offline_root, copy)
    path = sorted((copy / "events").glob("date=*/part-*.parquet"))[0]
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"2"}), path)
    with pytest.raises(UnsupportedSchema, match="schema version 2"):
        distributed_examples(client, copy, tmp_path / "work", CONFIG, partitions=2)
