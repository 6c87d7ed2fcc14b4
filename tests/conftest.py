"""Shared by every test: nothing reads the project's own MLflow store.

`var/mlflow` holds whatever `make train` registered on this machine; a champion there would
score the decisions of tests that build their settings from the defaults. Every test process
(and the servers and commands it starts, which inherit the environment) points
RAPPORT_MLFLOW_URI at a store that does not exist; tests of the registry give their own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import Chromium


def pytest_configure(config: pytest.Config) -> None:
    missing = Path(tempfile.gettempdir()) / f"rapport-tests-{os.getpid()}" / "no-mlflow.db"
    os.environ["RAPPORT_MLFLOW_URI"] = f"sqlite:///{missing}"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """A headless Chromium for the module's page tests (tests/browser.py)."""
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()
