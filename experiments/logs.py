"""From the decision and event logs to an experiment's per-unit frame.

The unit is the customer. Each logged decision names the experiment variants it applied
(`Decision.experiments`); outcomes join to decisions by `decision_id`. For one experiment:

- a unit's variant is that of its first exposure; a unit later exposed under another variant
  (the weights changed) is a *crossover*: it stays in its first variant and the decisions
  of the other one are left out;
- `exposures`: the unit's decisions in its variant;
- `value`, by the experiment's primary metric, over the outcomes of those decisions' actions:
  `conversion` is 1 if the customer accepted or converted one of them, else 0; `value` the EUR
  of their conversions;
- `covariate` (CUPED): the same metric over the customer's action outcomes in the pre-period,
  the `covariate_days` before the experiment's start, whatever decision they answered;
- guardrails from the customer's events from their first exposure to the end of the window:
  `complaint` (0/1: a complaint opened), `opt_out` (0/1: a consent denied or revoked) and
  `feedback_score` (mean score 0-10; NaN without feedback).

Logs come from the online store (`OnlineLogs`: `OnlineStore.read_log`, a full scan) or from
the offline Parquet store (`OfflineLogs`, written by `rapport export`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic_core import from_json

from engine.decision import Decision
from experiments.definitions import Experiment
from feature_store.base import LogTable, OnlineStore

#: Outcomes that count as a conversion of an action.
CONVERTING = frozenset({"accepted", "converted"})
#: Consent statuses that count as an opt-out.
OPTING_OUT = frozenset({"denied", "revoked"})
#: Event types the join reads; the rest of the event log is skipped.
_EVENT_TYPES = frozenset({"outcome", "complaint_opened", "consent_changed", "feedback"})
#: How each of those types appears in an event's compact JSON: a cheap test before decoding.
_EVENT_MARKERS = tuple(f'"type":"{kind}"' for kind in sorted(_EVENT_TYPES))
_PAGE_SIZE = 5000


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log entry: its customer (after merges), its time (UTC) and its JSON `text`, decoded
    by `body` only when asked (most entries are skipped on their text alone)."""

    customer_id: str
    at: datetime
    text: str

    @property
    def body(self) -> dict[str, Any]:
        """The text decoded (again at each call: keep the result)."""
        decoded: dict[str, Any] = from_json(self.text)
        return decoded


class LogSource(Protocol):
    """Where the logs are read from; each call reads its log again, in log order. Texts are
    compact JSON (`model_dump_json()`), as the stores keep them."""

    def decisions(self) -> Iterator[LogEntry]: ...

    def events(self) -> Iterator[LogEntry]: ...


class OnlineLogs:
    """The logs of an online store that can read them (`read_log`; else UnsupportedCapability)."""

    def __init__(self, store: OnlineStore, page_size: int = _PAGE_SIZE) -> None:
        self.store, self.page_size = store, page_size

    def decisions(self) -> Iterator[LogEntry]:
        return self._entries("decisions")

    def events(self) -> Iterator[LogEntry]:
        return self._entries("events")

    def _entries(self, table: LogTable) -> Iterator[LogEntry]:
        after = 0
        while True:
            page = self.store.read_log(table, after, self.page_size)
            for record in page.records:
                yield LogEntry(record.customer_id, _utc(record.at_us), record.body)
            if not page.records:
                return
            after = page.next_after


class OfflineLogs:
    """The logs exported to the offline Parquet store in `folder` (`rapport export`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def decisions(self) -> Iterator[LogEntry]:
        from feature_store.offline.export import OfflineStore

        frame = OfflineStore(self.folder).read("decisions")
        for customer, at, body in zip(
            frame["customer_id"], frame["decided_at"], frame["body"], strict=True
        ):
            yield LogEntry(str(customer), at.to_pydatetime(), str(body))

    def events(self) -> Iterator[LogEntry]:
        from feature_store.offline.export import OfflineStore

        frame = OfflineStore(self.folder).read("events")
        frame = frame[frame["type"].isin(_EVENT_TYPES)]
        for customer, at, kind, attributes in zip(
            frame["customer_id"], frame["occurred_at"], frame["type"], frame["attributes"],
            strict=True,
        ):  # fmt: skip
            # The attributes column is a JSON object already: compose, do not decode.
            text = f'{{"type":{json.dumps(kind)},"attributes":{attributes}}}'
            yield LogEntry(str(customer), at.to_pydatetime(), text)


@dataclass
class ExposedDecision:
    """A decision of the experiment: its unit and variant, its first action (if any) with
    the logged propensity, that action's reward (the primary metric over its outcomes; set by
    the join), and, for off-policy evaluation, the logged decision's JSON when it returned an
    action (`decision()`)."""

    decision_id: str
    unit_id: str
    variant: str
    at: datetime
    action_id: str | None
    propensity: float | None
    text: str | None = None
    reward: float = 0.0

    def decision(self) -> Decision | None:
        """The logged decision (with the unit as its customer), or None without an action."""
        if self.text is None:
            return None
        decision = Decision.model_validate_json(self.text)
        return decision.model_copy(update={"customer_id": self.unit_id})


@dataclass
class ExperimentLogs:
    """The joined logs of one experiment (see the module docstring for each column).

    `units`: one row per unit: unit_id, variant, first_exposed_at, exposures, value,
    covariate, complaint, opt_out, feedback_score. `metric_events`: unit_id, variant, at,
    amount: each increment of a unit's value (a first conversion, or EUR converted), for the
    metric over time. `decisions`: the exposed decisions. `crossovers`: units exposed under
    more than one variant.
    """

    units: pd.DataFrame
    metric_events: pd.DataFrame
    decisions: list[ExposedDecision] = field(default_factory=list)
    crossovers: int = 0


def join_experiment_logs(
    experiment: Experiment, source: LogSource, *, at: datetime
) -> ExperimentLogs:
    """Join the logs of `source` for `experiment`, as of `at` (entries after it are ignored)."""
    decisions, crossed = _exposed_decisions(experiment, source.decisions(), at)
    join = _Join(experiment, decisions, at)
    for entry in source.events():
        if entry.at <= at and any(marker in entry.text for marker in _EVENT_MARKERS):
            join.add(entry)
    return ExperimentLogs(
        units=_units_frame(join.units.values(), experiment),
        metric_events=pd.DataFrame(
            join.metric_rows, columns=["unit_id", "variant", "at", "amount"]
        ),
        decisions=decisions,
        crossovers=crossed,
    )


class _Join:
    """The units of the exposed decisions, completed event by event."""

    def __init__(self, experiment: Experiment, decisions: list[ExposedDecision], at: datetime):
        self.experiment = experiment
        self.units = _units(decisions)
        self.by_id = {d.decision_id: d for d in decisions}
        self.pre_start = experiment.start - timedelta(days=experiment.covariate_days)
        self.window_end = at if experiment.stop is None else min(at, experiment.stop)
        self.metric_rows: list[tuple[str, str, datetime, float]] = []
        self.converted: set[str] = set()

    def add(self, entry: LogEntry) -> None:
        body = entry.body
        kind, attributes = body.get("type"), body.get("attributes", {})
        if kind == "outcome":
            if attributes.get("kind") == "action":
                self._outcome(entry, attributes)
            return
        unit = self.units.get(entry.customer_id)
        if unit is None or not unit.first_exposed_at <= entry.at <= self.window_end:
            return
        if kind == "complaint_opened":
            unit.complaint = 1.0
        elif kind == "consent_changed" and attributes.get("status") in OPTING_OUT:
            unit.opt_out = 1.0
        elif kind == "feedback" and isinstance(attributes.get("score"), int | float):
            unit.feedback.append(float(attributes["score"]))

    def _outcome(self, entry: LogEntry, attributes: dict[str, Any]) -> None:
        """An answer to an action: the value of an exposed decision's unit, or the
        pre-period covariate of a unit."""
        amount = _metric_amount(self.experiment, attributes)
        if amount == 0.0:
            return
        conversion = self.experiment.primary_metric == "conversion"
        decision = self.by_id.get(str(attributes.get("decision_id")))
        if decision is None:
            if (
                self.pre_start <= entry.at < self.experiment.start
                and entry.customer_id in self.units
            ):
                self.units[entry.customer_id].covariate += amount
            return
        if decision.action_id == attributes.get("target"):
            decision.reward = 1.0 if conversion else decision.reward + amount
        if conversion and decision.unit_id in self.converted:
            return  # a unit converts once
        self.converted.add(decision.unit_id)
        self.units[decision.unit_id].value += amount
        self.metric_rows.append((decision.unit_id, decision.variant, entry.at, amount))


def _metric_amount(experiment: Experiment, attributes: dict[str, Any]) -> float:
    """What one action outcome adds to the primary metric."""
    outcome = attributes.get("outcome")
    if experiment.primary_metric == "conversion":
        return 1.0 if outcome in CONVERTING else 0.0
    value = attributes.get("value")
    if outcome == "converted" and isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return 0.0


def _exposed_decisions(
    experiment: Experiment, entries: Iterable[LogEntry], at: datetime
) -> tuple[list[ExposedDecision], int]:
    """Decisions exposed to the experiment, each unit kept in its first variant."""
    first_variant: dict[str, str] = {}
    crossed: set[str] = set()
    exposed: list[ExposedDecision] = []
    for decision in sorted(_exposures(experiment, entries, at), key=lambda d: d.at):
        first = first_variant.setdefault(decision.unit_id, decision.variant)
        if first != decision.variant:
            crossed.add(decision.unit_id)
            continue
        exposed.append(decision)
    return exposed, len(crossed)


def _exposures(
    experiment: Experiment, entries: Iterable[LogEntry], at: datetime
) -> Iterator[ExposedDecision]:
    """The decisions that name the experiment, decoded once; only what the join needs is kept
    (bodies are large: their candidate traces)."""
    marker = f'"experiment_id":{json.dumps(experiment.id)}'  # as compact JSON writes it
    for entry in entries:
        if entry.at > at or marker not in entry.text:
            continue
        body = entry.body
        variants = [
            str(exposure["variant"])
            for exposure in body.get("experiments") or ()
            if exposure.get("experiment_id") == experiment.id
        ]
        if not variants:
            continue
        actions = sorted(body.get("actions") or (), key=lambda a: int(a.get("rank", 0)))
        yield ExposedDecision(
            decision_id=str(body["decision_id"]),
            unit_id=entry.customer_id,
            variant=variants[0],
            at=entry.at,
            action_id=str(actions[0]["id"]) if actions else None,
            propensity=float(actions[0]["propensity"]) if actions else None,
            text=entry.text if actions else None,
        )


@dataclass
class _Unit:
    unit_id: str
    variant: str
    first_exposed_at: datetime
    exposures: int = 0
    value: float = 0.0
    covariate: float = 0.0
    complaint: float = 0.0
    opt_out: float = 0.0
    feedback: list[float] = field(default_factory=list)


def _units(decisions: list[ExposedDecision]) -> dict[str, _Unit]:
    units: dict[str, _Unit] = {}
    for decision in decisions:  # in time order: the first one creates the unit
        unit = units.setdefault(
            decision.unit_id, _Unit(decision.unit_id, decision.variant, decision.at)
        )
        unit.exposures += 1
    return units


UNIT_COLUMNS = (
    "unit_id",
    "variant",
    "first_exposed_at",
    "exposures",
    "value",
    "covariate",
    "complaint",
    "opt_out",
    "feedback_score",
)


def _units_frame(units: Iterable[_Unit], experiment: Experiment) -> pd.DataFrame:
    order = {variant.name: index for index, variant in enumerate(experiment.variants)}
    rows = [
        (
            u.unit_id,
            u.variant,
            u.first_exposed_at,
            u.exposures,
            u.value,
            u.covariate,
            u.complaint,
            u.opt_out,
            float(np.mean(u.feedback)) if u.feedback else math.nan,
        )
        for u in sorted(units, key=lambda u: (order.get(u.variant, len(order)), u.unit_id))
    ]
    return pd.DataFrame(rows, columns=list(UNIT_COLUMNS))


def _utc(at_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at_us)
