"""The `ExperimentRegistry` contract on real SQLite, a real redis-server and a real one-node
Redis Cluster; then the typed layer (`experiments.registry`) and sticky assignment when an
admin changes the weights of a stored experiment."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from experiments.definitions import Experiment
from experiments.registry import (
    RunningExperiments,
    change_experiment,
    create_experiment,
    declare_experiments,
    get_experiment,
    running_experiments,
)
from feature_store.errors import StoreUnavailable, UnsupportedStoreUrl
from feature_store.experiments import (
    DuplicateExperiment,
    ExperimentRegistry,
    StaleExperiment,
    UnknownExperiment,
)
from feature_store.factory import open_experiment_registry
from tests.feature_store.redis_servers import RedisServer, free_port

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

Opener = Callable[[], ExperimentRegistry]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def one_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A cluster-enabled redis-server serving all 16384 slots alone."""
    with RedisServer(tmp_path_factory.mktemp("cluster"), cluster_node=True) as node:
        with contextlib.closing(node.client()) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            deadline = time.monotonic() + 20
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "the one-node cluster did not become ready"
                time.sleep(0.05)
        yield node


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis+cluster", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one empty backend of each kind; closes them after the test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rapport.db'}"
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flushall()
        url = server.url
    else:
        node: RedisServer = request.getfixturevalue("one_node_cluster")
        node.flushall()
        url = f"redis+cluster://{node.address}"
    opened: list[ExperimentRegistry] = []

    def open_backend() -> ExperimentRegistry:
        opened.append(open_experiment_registry(url))
        return opened[-1]

    yield open_backend
    for registry in opened:
        registry.close()


@pytest.fixture
def registry(backend: Opener) -> ExperimentRegistry:
    return backend()


def experiment(
    experiment_id: str = "exp-1", weights: tuple[float, float] = (1, 1), **fields: object
) -> Experiment:
    return Experiment.model_validate(
        {
            "id": experiment_id,
            "hypothesis": "The challenger converts more.",
            "start": T0.isoformat(),
            "variants": [
                {"name": "control", "weight": weights[0]},
                {"name": "challenger", "weight": weights[1], "model_alias": "challenger"},
            ],
            **fields,
        }
    )


# -- the contract -------------------------------------------------------------------------------


def test_a_created_definition_is_read_back_by_every_handle(backend: Opener) -> None:
    first, second = backend(), backend()

    stored = first.create("exp-1", '{"id": "exp-1"}')

    assert (stored.revision, stored.definition) == (1, '{"id": "exp-1"}')
    assert second.get("exp-1") == stored
    assert second.get("exp-2") is None
    assert [s.experiment_id for s in second.list()] == ["exp-1"]


def test_an_id_is_created_once(registry: ExperimentRegistry) -> None:
    registry.create("exp-1", "first")

    with pytest.raises(DuplicateExperiment):
        registry.create("exp-1", "second")
    stored = registry.get("exp-1")
    assert stored is not None
    assert stored.definition == "first"


def test_definitions_are_listed_by_id(registry: ExperimentRegistry) -> None:
    for name in ("b-exp", "a-exp", "c-exp"):
        registry.create(name, name)

    assert [s.experiment_id for s in registry.list()] == ["a-exp", "b-exp", "c-exp"]


def test_replace_is_a_compare_and_set_on_the_revision(registry: ExperimentRegistry) -> None:
    registry.create("exp-1", "v1")

    replaced = registry.replace("exp-1", "v2", revision=1)

    assert (replaced.revision, registry.get("exp-1")) == (2, replaced)
    with pytest.raises(StaleExperiment):
        registry.replace("exp-1", "v3 from a stale read", revision=1)
    stored = registry.get("exp-1")
    assert stored is not None
    assert (stored.definition, stored.revision) == ("v2", 2)
    with pytest.raises(UnknownExperiment):
        registry.replace("exp-9", "v1", revision=1)


def test_of_concurrent_replaces_of_one_revision_exactly_one_wins(backend: Opener) -> None:
    backend().create("exp-1", "v1")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def writer(index: int) -> None:
        handle = backend()
        barrier.wait()
        try:
            handle.replace("exp-1", f"writer-{index}", revision=1)
            outcomes.append("won")
        except StaleExperiment:
            outcomes.append("stale")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["stale"] * 7 + ["won"]
    stored = backend().get("exp-1")
    assert stored is not None
    assert stored.revision == 2


def test_a_closed_registry_refuses_calls(registry: ExperimentRegistry) -> None:
    registry.close()

    with pytest.raises(StoreUnavailable):
        registry.get("exp-1")


# -- the typed layer ----------------------------------------------------------------------------


def test_experiments_round_trip_through_every_backend(registry: ExperimentRegistry) -> None:
    created = create_experiment(registry, experiment(population={"sample_percent": 40}))

    assert get_experiment(registry, "exp-1") == created
    with pytest.raises(UnknownExperiment):
        get_experiment(registry, "nope")


def test_running_experiments_are_those_started_and_not_stopped_earliest_first(
    registry: ExperimentRegistry,
) -> None:
    create_experiment(registry, experiment("later", start=(T0 + timedelta(days=1)).isoformat()))
    create_experiment(registry, experiment("first"))
    create_experiment(registry, experiment("stopped", stop=(T0 + timedelta(hours=1)).isoformat()))

    at = T0 + timedelta(days=2)
    assert [e.id for e in running_experiments(registry, at)] == ["first", "later"]
    assert [e.id for e in running_experiments(registry, T0)] == ["first", "stopped"]


def test_declaring_creates_missing_and_replaces_changed_definitions(
    registry: ExperimentRegistry,
) -> None:
    create_experiment(registry, experiment("kept"))
    create_experiment(registry, experiment("changed"))

    changed = declare_experiments(
        registry, [experiment("kept"), experiment("changed", (1, 3)), experiment("new")]
    )

    assert changed == ["changed", "new"]
    assert get_experiment(registry, "changed").weights == {"control": 1, "challenger": 3}


def test_running_experiments_are_cached_for_the_ttl(registry: ExperimentRegistry) -> None:
    clock = [0.0]
    running = RunningExperiments(registry, ttl_seconds=5, clock=lambda: clock[0])
    at = T0 + timedelta(hours=1)
    assert running.at(at) == []

    create_experiment(registry, experiment())
    clock[0] = 4.9
    assert running.at(at) == []  # still the list read at 0 s
    clock[0] = 5.0
    assert [e.id for e in running.at(at)] == ["exp-1"]

    change_experiment(registry, "exp-1", lambda e: e.stopped(T0 + timedelta(minutes=1)))
    running.forget()
    assert running.at(at) == []


def test_stopping_keeps_the_definition_and_ends_the_run(registry: ExperimentRegistry) -> None:
    create_experiment(registry, experiment())

    stopped = change_experiment(registry, "exp-1", lambda e: e.stopped(T0 + timedelta(days=3)))

    assert stopped.stop == T0 + timedelta(days=3)
    assert get_experiment(registry, "exp-1").is_running(T0 + timedelta(days=2))
    assert not get_experiment(registry, "exp-1").is_running(T0 + timedelta(days=3))


# -- sticky assignment under a weight change ----------------------------------------------------


def test_a_weight_change_moves_customers_only_as_the_new_weights_require(
    registry: ExperimentRegistry,
) -> None:
    create_experiment(registry, experiment(weights=(90, 10)))
    customers = [f"cust-{i:05d}" for i in range(10_000)]
    stored = get_experiment(registry, "exp-1")
    before = {c: stored.assign(c) for c in customers}

    change_experiment(
        registry, "exp-1", lambda e: e.with_weights({"control": 50, "challenger": 50})
    )
    ramped = get_experiment(registry, "exp-1")
    after = {c: ramped.assign(c) for c in customers}

    moved = [c for c in customers if before[c] != after[c]]
    # Only control -> challenger moves, and about the 40 % the new shares require.
    assert all((before[c], after[c]) == ("control", "challenger") for c in moved)
    assert len(moved) / len(customers) == pytest.approx(0.40, abs=0.015)
    assert all(after[c] == "challenger" for c in customers if before[c] == "challenger")


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "memory://secret",
        "sqlite://secret@host/x.db",
        "redis://:secret@h:1/x",
        "redis+cluster://:secret@h:1/2",
        "redis://:secret@h:1/0?key_prefix=no%20spaces",
        "no-scheme-secret",
    ],
)
def test_unusable_urls_are_refused_without_echoing_a_password(url: str) -> None:
    with pytest.raises(UnsupportedStoreUrl) as refused:
        open_experiment_registry(url)
    assert "secret" not in str(refused.value)


def test_an_unreachable_redis_is_unavailable_not_an_error() -> None:
    registry = open_experiment_registry(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable):
            registry.list()
    finally:
        registry.close()


def test_redis_keeps_every_definition_in_one_key_under_the_store_prefix(
    redis_server: RedisServer,
) -> None:
    redis_server.flushall()
    with contextlib.closing(open_experiment_registry(f"{redis_server.url}?key_prefix=bank")) as r:
        create_experiment(r, experiment("exp-1"))
        create_experiment(r, experiment("exp-2"))
    with contextlib.closing(redis.Redis.from_url(redis_server.url)) as client:
        assert client.keys("*") == [b"bank:experiments:{experiments}"]
