"""Shared by the store tests: a real redis-server and a real local Redis Cluster, started once
per session (each test empties what it uses), and contract modules whose asserts report their
operands."""

from collections.abc import Iterator

import pytest

from tests.feature_store.redis_servers import LocalCluster, RedisServer

# The contract is a helper module, not a test module, so pytest would not rewrite its asserts
# (no values in failure messages) unless told before it is imported.
pytest.register_assert_rewrite(
    "tests.feature_store.contract",
    "tests.feature_store.contract_logs",
    "tests.feature_store.contract_builders",
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis-server")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster
