"""The model server's swap rules, against a registry fake that implements `ModelSource`:
what is refused stays refused until the alias moves or a reload forces it, an alias removed
goes back to the online rates, and readers never see a half-swapped state."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from api.model_server import (
    CHAMPION,
    LoadedModel,
    ModelServer,
    RegistryUnreachable,
    smoke_test,
)
from engine.decision import DecisionRequest
from engine.facts import Facts
from engine.habits import UsualRequest


class VersionScorer:
    """Every action accepted with probability 1/2; `version` names it."""

    def __init__(self, version: str, *, posterior: tuple[float, float] = (1.0, 1.0)) -> None:
        self.version = version
        self.posterior = posterior

    @property
    def model_version(self) -> str | None:
        return f"fake/{self.version}"

    def action_posteriors(
        self,
        action_ids: Sequence[str],
        *,
        facts: Facts,
        segment: str,
        request: DecisionRequest,
    ) -> list[tuple[float, float]]:
        return [self.posterior for _ in action_ids]

    def default_acceptance(
        self, habits: Sequence[UsualRequest], *, request: DecisionRequest
    ) -> list[float] | None:
        return None


@dataclass
class FakeRegistry:
    """Aliases to versions; `broken` versions fail to load, `nonsense` ones load but score
    NaN; `loads` lists the attempts."""

    aliases: dict[str, str] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    nonsense: set[str] = field(default_factory=set)
    reachable: bool = True
    loads: list[str] = field(default_factory=list)
    name: str = "fake"

    def alias_versions(self) -> dict[str, str]:
        if not self.reachable:
            raise RegistryUnreachable("connection refused")
        return dict(self.aliases)

    def load(self, alias: str, version: str) -> LoadedModel:
        self.loads.append(version)
        if version in self.broken:
            raise ValueError(f"propensity.npz: checksum mismatch in {version}")
        return LoadedModel(
            name=self.name,
            alias=alias,
            version=version,
            run_id=f"run-{version}",
            source=f"models:/m-{version}",
            checksum=version * 64,
            loaded_at=datetime.now(UTC),
            scorer=VersionScorer(
                version, posterior=(math.nan, 1.0) if version in self.nonsense else (1.0, 1.0)
            ),
        )


def served_version(server: ModelServer, alias: str = CHAMPION) -> str | None:
    scorer = server.scorer(alias)
    return None if scorer is None else scorer.model_version


def test_a_refused_version_is_not_retried_until_the_alias_moves_or_a_reload_forces_it() -> None:
    registry = FakeRegistry({CHAMPION: "1"}, broken={"2"})
    server = ModelServer(registry)
    server.refresh()
    registry.aliases[CHAMPION] = "2"

    server.refresh()
    server.refresh()

    assert registry.loads == ["1", "2"]
    assert served_version(server) == "fake/1"
    [state] = server.states()
    assert state.refused_version == state.registry_version == "2"
    assert state.error is not None
    assert "checksum mismatch" in state.error

    server.refresh(force=True)

    assert registry.loads == ["1", "2", "2"]
    registry.broken.clear()
    registry.aliases[CHAMPION] = "3"
    server.refresh()
    assert served_version(server) == "fake/3"
    assert server.states()[0].error is None


def test_a_model_whose_scores_are_not_probabilities_is_refused() -> None:
    registry = FakeRegistry({CHAMPION: "1"}, nonsense={"2"})
    server = ModelServer(registry, validate=smoke_test(["card_upgrade", "savings_goal"]))
    server.refresh()
    assert served_version(server) == "fake/1"

    registry.aliases[CHAMPION] = "2"
    server.refresh()

    assert served_version(server) == "fake/1"
    assert "not a distribution" in (server.states()[0].error or "")


def test_an_unreachable_registry_keeps_the_served_model_and_says_so() -> None:
    registry = FakeRegistry({CHAMPION: "1"})
    server = ModelServer(registry)
    server.refresh()
    registry.reachable = False

    server.refresh()

    assert served_version(server) == "fake/1"
    assert "unreachable" in (server.states()[0].error or "")
    registry.reachable = True
    server.refresh()
    assert server.states()[0].error is None


def test_an_alias_removed_from_the_registry_goes_back_to_the_online_rates() -> None:
    registry = FakeRegistry({CHAMPION: "1"})
    server = ModelServer(registry)
    server.refresh()

    del registry.aliases[CHAMPION]
    server.refresh()

    assert server.scorer() is None


def test_readers_see_the_old_model_or_the_new_one_during_swaps() -> None:
    registry = FakeRegistry({CHAMPION: "0"})
    server = ModelServer(registry)
    server.refresh()
    seen: list[str | None] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(served_version(server))

    reader = threading.Thread(target=read)
    reader.start()
    for version in range(1, 50):
        registry.aliases[CHAMPION] = str(version)
        server.refresh()
    stop.set()
    reader.join()

    assert None not in seen
    numbers = [int(version.removeprefix("fake/")) for version in seen if version]
    assert numbers == sorted(numbers)  # one reader sees versions only move forward


@pytest.mark.parametrize("alias", ["challenger", "shadow"])
def test_another_alias_loads_on_first_ask_and_is_refreshed_with_the_champion(alias: str) -> None:
    registry = FakeRegistry({CHAMPION: "1", alias: "2"})
    server = ModelServer(registry)

    assert server.scorer(alias) is None  # loading in the background
    deadline = time.monotonic() + 5
    while served_version(server, alias) is None and time.monotonic() < deadline:
        time.sleep(0.01)

    assert served_version(server, alias) == "fake/2"
    registry.aliases[alias] = "3"
    server.refresh()
    assert served_version(server, alias) == "fake/3"
