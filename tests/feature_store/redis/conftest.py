"""Fixtures of the Redis store tests: a `target` that runs a test once on the session's server
and once on its cluster (tests/feature_store/conftest.py), emptied first."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest

from tests.feature_store.redis.support import RawClient, Target, cluster, standalone


@pytest.fixture(params=["redis", "redis+cluster"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each test that takes it runs once on the server, once on the cluster."""
    if request.param == "redis":
        return standalone(request.getfixturevalue("redis_server"))
    return cluster(request.getfixturevalue("redis_cluster"))


@pytest.fixture
def raw(target: Target) -> Iterator[RawClient]:
    with closing(target.raw()) as client:
        yield client
