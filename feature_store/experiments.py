"""The experiment registry: experiment definitions kept beside the online store.

The registry keeps each definition as a JSON document under its id, with a revision that
grows by one at every change, so that two admins changing one experiment at once cannot
overwrite each other unknowingly (`replace` is a compare-and-set on the revision). It does not
read the documents: `experiments.registry` turns them into `experiments.definitions.Experiment`
(the store layer never imports the experiments package).

`feature_store.factory.open_experiment_registry(url)` opens it from the online store's URL
(`RAPPORT_STORE`), as `open_credentials` does for API keys:

* `sqlite:///path.db`: the table `experiments` in the online store's file;
* `redis://host:port/db`, `redis+cluster://host:port`: one hash (one cluster slot).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from feature_store.errors import StoreError


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    """One definition as stored: its id, its JSON document and its revision (1 when created)."""

    experiment_id: str
    definition: str
    revision: int


class DuplicateExperiment(StoreError):
    """An experiment with this id is already stored."""


class UnknownExperiment(StoreError):
    """No experiment with this id is stored."""


class StaleExperiment(StoreError):
    """The experiment changed since it was read (its revision moved): read it again."""


class ExperimentRegistry(ABC):
    """Where experiment definitions live. Safe to share between threads; any method may raise
    `StoreUnavailable` when the backend cannot be reached."""

    @abstractmethod
    def create(self, experiment_id: str, definition: str) -> StoredExperiment:
        """Store a new definition at revision 1. Raises DuplicateExperiment if the id is taken;
        nothing is written then."""

    @abstractmethod
    def get(self, experiment_id: str) -> StoredExperiment | None:
        """The stored definition, or None."""

    @abstractmethod
    def list(self) -> list[StoredExperiment]:
        """Every stored definition, by id."""

    @abstractmethod
    def replace(self, experiment_id: str, definition: str, *, revision: int) -> StoredExperiment:
        """Replace the definition if it is still at `revision`; the new one is at revision + 1.

        Raises UnknownExperiment if the id is not stored and StaleExperiment if its revision is
        not `revision`; nothing is written then.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The registry must not be used afterwards."""
