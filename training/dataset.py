"""Training examples from the logs: the point-in-time replay, plus what the decision logged.

`feature_store.offline.replay.training_examples` gives one row per returned item with the profile's
facts as they stood before the decision. Two things the models need are not facts but were
logged with the decision itself, so they are exactly what the engine saw:

* for a default, the strength of the habit behind it (`DEFAULT_COLUMNS`: its channel, the
  matching requests, the requests considered and the smoothed share), what the
  default-acceptance model is fitted on and what `UsualRequest` gives it when serving;
* for every row, the actions the contact policy allowed in that decision (`ALLOWED_COLUMN`, a
  JSON list in catalogue order), over which off-policy evaluation replays a new ranking.

`load_examples` reads the offline store's tables; rows of erased customers are left out, as
the replay leaves them out (the offline store has already removed them; its applied erasures
are passed to the replay too, in case a table was copied from before).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.config import EngineConfig
from engine.decision import Decision
from feature_store.offline.columnar import EVENT_COLUMNS, read_events
from feature_store.offline.export import STATE_FILE, OfflineStore
from feature_store.offline.replay import EventLog, training_examples
from feature_store.offline.tables import SCHEMAS

DEFAULT_CHANNEL = "default_channel"
DEFAULT_MATCHES = "default_matches"
DEFAULT_WINDOW = "default_window"
DEFAULT_CONFIDENCE = "default_confidence"
DEFAULT_COLUMNS: tuple[str, ...] = (
    DEFAULT_CHANNEL,
    DEFAULT_MATCHES,
    DEFAULT_WINDOW,
    DEFAULT_CONFIDENCE,
)
ALLOWED_COLUMN = "allowed_actions"
DECISION_COLUMNS: tuple[str, ...] = (*DEFAULT_COLUMNS, ALLOWED_COLUMN)


def load_examples(
    offline_root: Path,
    config: EngineConfig,
    *,
    label_window: timedelta | None = None,
) -> pd.DataFrame:
    """The training examples of the offline store in `offline_root` (see the module docstring).

    `config` must be the online engine config (the replay is the online fold)."""
    store = OfflineStore(offline_root)
    return examples_from_logs(
        read_events(
            sorted((offline_root / "events").glob("date=*/part-*.parquet")), SCHEMAS["events"]
        ),
        store.read("decisions"),
        store.read("outcomes"),
        config,
        erased=applied_erasures(offline_root),
        label_window=label_window,
    )


def examples_from_logs(
    events: EventLog,
    decisions: pd.DataFrame | Iterable[Decision],
    outcomes: EventLog | None,
    config: EngineConfig,
    *,
    erased: Collection[str] = frozenset(),
    label_window: timedelta | None = None,
) -> pd.DataFrame:
    """`training_examples` of the logs with `DECISION_COLUMNS` added (same arguments)."""
    logged = list(_decisions(decisions))
    examples = training_examples(
        events, logged, outcomes, config, erased=erased, label_window=label_window
    )
    return with_decision_columns(examples, logged)


def with_decision_columns(examples: pd.DataFrame, decisions: Iterable[Decision]) -> pd.DataFrame:
    """`examples` with the habit strength of each default and the allowed actions of each
    decision, from the logged `decisions` (the first of a repeated decision id counts)."""
    allowed: dict[str, str] = {}
    habits: dict[tuple[str, str], tuple[str, int, int, float]] = {}
    for decision in decisions:
        if decision.decision_id in allowed:
            continue
        allowed[decision.decision_id] = json.dumps(
            [trace.action_id for trace in decision.candidates if trace.status != "dropped"]
        )
        for default in decision.defaults:
            habits[(decision.decision_id, default.id)] = (
                default.channel,
                default.matches,
                default.window,
                default.confidence,
            )
    frame = examples.copy()
    keys = list(zip(frame["decision_id"], frame["item_id"], strict=True))
    found = [habits.get(key) for key in keys]
    frame[DEFAULT_CHANNEL] = [h[0] if h else None for h in found]
    for position, column in enumerate(DEFAULT_COLUMNS[1:], start=1):
        frame[column] = np.array([h[position] if h else np.nan for h in found], dtype=np.float64)
    frame[ALLOWED_COLUMN] = [allowed.get(d) for d in frame["decision_id"]]
    return frame


def _decisions(decisions: pd.DataFrame | Iterable[Decision]) -> Iterator[Decision]:
    """Decision objects; an offline table's customer (a merge survivor) over the body's."""
    if not isinstance(decisions, pd.DataFrame):
        yield from decisions
        return
    for body, customer_id in zip(
        decisions["body"].tolist(), decisions["customer_id"].tolist(), strict=True
    ):
        decision = Decision.model_validate_json(body)
        if decision.customer_id != customer_id:
            decision = decision.model_copy(update={"customer_id": customer_id})
        yield decision


def log_ordered_events(offline_root: Path) -> pa.Table:
    """The replay columns of the offline `events` table, in log (`seq`) order, decoded by
    `feature_store.offline.columnar` (each file's schema version checked)."""
    paths = sorted((offline_root / "events").glob("date=*/part-*.parquet"))
    table = read_events(paths, SCHEMAS["events"], columns=(*EVENT_COLUMNS, "seq"))
    return table.sort_by("seq").drop_columns(["seq"])


def applied_erasures(offline_root: Path) -> frozenset[str]:
    """The digests of the customers whose erasure the offline store has applied."""
    path = offline_root / STATE_FILE
    if not path.exists():
        return frozenset()
    state: dict[str, Any] = json.loads(path.read_text())
    return frozenset(str(digest) for digest in state.get("erasures_applied", []))
