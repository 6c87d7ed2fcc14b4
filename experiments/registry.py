"""Experiments in the registry: typed reads and the changes an admin makes.

`feature_store.experiments.ExperimentRegistry` keeps definitions as JSON documents; these
functions read and write them as `Experiment`s. Changes are compare-and-set on the stored
revision, retried a few times when another writer got in first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from os import PathLike

from engine.catalogue import Catalogue
from experiments.definitions import Experiment, InvalidExperiment, load_experiments
from feature_store.errors import StoreError, StoreUnavailable
from feature_store.experiments import (
    ExperimentRegistry,
    StaleExperiment,
    StoredExperiment,
    UnknownExperiment,
)

_CHANGE_ATTEMPTS = 5
_log = logging.getLogger(__name__)


def create_experiment(registry: ExperimentRegistry, experiment: Experiment) -> Experiment:
    """Store a new experiment; DuplicateExperiment if its id is taken."""
    registry.create(experiment.id, experiment.model_dump_json())
    return experiment


def get_experiment(registry: ExperimentRegistry, experiment_id: str) -> Experiment:
    """The stored experiment; UnknownExperiment if there is none."""
    stored = registry.get(experiment_id)
    if stored is None:
        raise UnknownExperiment(f"no experiment {experiment_id!r}")
    return _parsed(stored)


def list_experiments(registry: ExperimentRegistry) -> list[Experiment]:
    """Every stored experiment, by id."""
    return [_parsed(stored) for stored in registry.list()]


def running_experiments(registry: ExperimentRegistry, at: datetime) -> list[Experiment]:
    """The experiments running at `at`, earliest start first (then by id): the order in which
    a decision looks for the one experiment it takes part in."""
    running = [e for e in list_experiments(registry) if e.is_running(at)]
    return sorted(running, key=lambda e: (e.start, e.id))


def change_experiment(
    registry: ExperimentRegistry, experiment_id: str, change: Callable[[Experiment], Experiment]
) -> Experiment:
    """Apply `change` to the stored experiment and store the result, as one compare-and-set.

    `change` may raise (e.g. `InvalidExperiment`); nothing is stored then. Raises
    UnknownExperiment, or StaleExperiment if other writers kept changing it meanwhile.
    """
    for attempt in range(_CHANGE_ATTEMPTS):
        stored = registry.get(experiment_id)
        if stored is None:
            raise UnknownExperiment(f"no experiment {experiment_id!r}")
        changed = change(_parsed(stored))
        try:
            registry.replace(experiment_id, changed.model_dump_json(), revision=stored.revision)
        except StaleExperiment:
            if attempt == _CHANGE_ATTEMPTS - 1:
                raise
            continue
        return changed
    raise AssertionError("unreachable")  # pragma: no cover


def declare_experiments(registry: ExperimentRegistry, experiments: list[Experiment]) -> list[str]:
    """Make the registry hold these definitions (from the YAML file of `RAPPORT_EXPERIMENTS`):
    create the missing ones, replace those stored differently. The file wins over changes made
    through the API to the same ids. Returns the ids created or replaced."""
    changed = []
    for experiment in experiments:
        stored = registry.get(experiment.id)
        if stored is None:
            create_experiment(registry, experiment)
            changed.append(experiment.id)
        elif _parsed(stored) != experiment:
            registry.replace(experiment.id, experiment.model_dump_json(), revision=stored.revision)
            changed.append(experiment.id)
    return changed


class RunningExperiments:
    """The running experiments, read from the registry at most every `ttl_seconds`.

    Every decision needs them; reading the registry each time would add a store round trip to
    the decision path. A change (new experiment, new weights, a stop) reaches every worker
    within `ttl_seconds`. If the registry cannot be read, the last list read is kept (an
    outage of the store makes decisions degraded anyway). Times are `clock` seconds.
    """

    def __init__(
        self,
        registry: ExperimentRegistry,
        *,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._experiments: list[Experiment] = []
        self._read_at: float | None = None

    def at(self, when: datetime) -> list[Experiment]:
        """The experiments running at `when`, in the order of `running_experiments`."""
        now = self._clock()
        with self._lock:
            fresh = self._read_at is not None and now - self._read_at < self.ttl_seconds
            experiments = self._experiments
        if not fresh:
            try:
                experiments = sorted(list_experiments(self.registry), key=lambda e: (e.start, e.id))
            except StoreError:
                pass  # a decision never fails for the registry: keep the last list read
            else:
                with self._lock:
                    self._experiments, self._read_at = experiments, now
        return [e for e in experiments if e.is_running(when)]

    def forget(self) -> None:
        """Read the registry again at the next call (after a change made in this process)."""
        with self._lock:
            self._read_at = None


def start_experiments(
    registry: ExperimentRegistry,
    *,
    declared: str | PathLike[str] | None,
    catalogue: Catalogue,
    ttl_seconds: float = 5.0,
) -> RunningExperiments:
    """At start-up: apply the YAML file `declared` (if any) to the registry, and return the
    running experiments of the decision path.

    A bad file raises `InvalidExperiment` naming the field (`experiments.0.variants.1.actions.0`
    for an action the catalogue lacks), so the start stops. An unreachable registry is logged
    and the start goes on: the registry keeps what it had.
    """
    if declared is not None:
        experiments = load_experiments(declared)
        for index, experiment in enumerate(experiments):
            try:
                experiment.check_catalogue(catalogue)
            except InvalidExperiment as exc:
                raise InvalidExperiment(f"experiments.{index}.{exc.field}", exc.reason) from None
        try:
            changed = declare_experiments(registry, experiments)
        except StoreUnavailable as exc:
            _log.error("experiments of %s not applied: %s", declared, exc)
        else:
            _log.info("experiments of %s applied; created or replaced: %s", declared, changed)
    return RunningExperiments(registry, ttl_seconds=ttl_seconds)


def _parsed(stored: StoredExperiment) -> Experiment:
    return Experiment.model_validate_json(stored.definition)
