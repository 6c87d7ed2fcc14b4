"""Point-in-time training examples: the online fold replayed over the offline logs.

For each logged decision, the features are the facts (`engine.facts.facts_for`) of the profile
folded from that customer's events with `occurred_at` strictly before `decided_at`, and nothing
later. Each customer's events are sorted by (occurred_at, event_id) and folded once, with the
same `engine.fold.apply_in_place` the online store uses, stopping at each decision to read the
facts: a customer's history is folded once, however many decisions it has. The result does not
depend on the order of the logs given, and events after a decision cannot reach its features.

Examples: one row per item a decision returned (each ranked action and each default), with the
decision's keys, the item, the features (`feature_columns()`) and the labels from the outcomes
logged for that item. A decision that returned nothing gives no example.

Residual skew between these features and what the online decision saw (it read the profile as
it stood when the decision was taken):

* Event time, not arrival time: an event that happened before the decision but reached the
  store after it is in the example's features, though the decision did not see it; an event
  dated after the decision that had already arrived (a touchpoint's clock running ahead) is
  not. Events dated exactly `decided_at` are left out (the decision's own exposures are).
* Nothing is too late here: every logged event is folded (`known_new=True`), as the stores do
  now. Events logged `too_late` (by an older store, folded online never) are folded too.
* Consent is the fold's one order dependence: a profiling revocation forgets what was learned
  from events that arrived before it even if dated after it. Replay uses time order.
* Merges: the offline rows keep the customer id they were exported with
(feature_store/offline/export.py),
  while the online profile of a survivor includes the absorbed customer's history.
* The engine config must be the online one: a different half-life or capacity is another fold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine.config import EngineConfig
from engine.decision import Decision, DecisionRequest
from engine.events import Channel, Event, EventType, OutcomeAttributes, OutcomeKind, ProblemKind
from engine.facts import FIELDS, Facts, FactType, facts_for
from engine.fold import apply_in_place, new_profile
from engine.identity import customer_digest
from engine.profile import Profile
from feature_store.offline.columnar import event_histories, events_table

FeatureValue = float | str | None

#: Outcomes from strongest to weakest: an item's label is the strongest outcome logged for it.
OUTCOME_STRENGTH: tuple[OutcomeKind, ...] = (
    OutcomeKind.CONVERTED,
    OutcomeKind.ACCEPTED,
    OutcomeKind.DECLINED,
    OutcomeKind.IGNORED,
)

KEY_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "customer_id",
    "decided_at",
    "touchpoint",
    "touchpoint_channel",
    "segment",
    "policy_version",
    "model_version",
    "exploration",
    "item_kind",
    "item_id",
    "item_rank",
    "item_propensity",
    "item_channel",
)
LABEL_COLUMNS: tuple[str, ...] = (
    "outcome",
    "accepted",
    "converted",
    "declined",
    "value",
    "outcome_at",
)


@dataclass(frozen=True, slots=True)
class _Column:
    """How one feature column is read from `Facts`."""

    name: str
    field: str
    kind: str  # number, flag, text, member, count, problem, problems, habits
    member: str = ""


def _feature_plan() -> tuple[_Column, ...]:
    columns: list[_Column] = []
    for name, spec in FIELDS.items():
        if spec.type is FactType.TEXT_SET:
            for member in sorted(spec.vocabulary or ()):
                columns.append(_Column(f"{name}.{member}", name, "member", member))
            columns.append(_Column(f"{name}.count", name, "count"))
        else:
            columns.append(_Column(name, name, spec.type.value))
    columns.append(_Column("open_problems.count", "", "problems"))
    columns.extend(
        _Column(f"open_problems.{kind.value}", "", "problem", kind.value) for kind in ProblemKind
    )
    columns.append(_Column("habits.count", "", "habits"))
    return tuple(columns)


_PLAN = _feature_plan()


def feature_columns() -> list[str]:
    """The feature columns of an example, in order: every registered fact as a number or a
    flag (1.0 / 0.0, NaN when unknown) or text (None when unknown); sets as one flag per
    value of their vocabulary plus a `.count`; open problems as a count and a flag per kind;
    `habits.count`, the usual requests the customer has."""
    return [column.name for column in _PLAN]


def flatten_facts(facts: Facts) -> dict[str, FeatureValue]:
    """The feature values of `facts`, keyed by `feature_columns()`."""
    values = facts.values
    flat: dict[str, FeatureValue] = {}
    for column in _PLAN:
        kind = column.kind
        if kind == "problems":
            flat[column.name] = float(len(facts.open_problems))
        elif kind == "problem":
            flat[column.name] = float(column.member in facts.open_problems)
        elif kind == "habits":
            flat[column.name] = float(len(facts.habits))
        else:
            flat[column.name] = _feature(kind, values[column.field], column.member)
    return flat


def _feature(kind: str, value: Any, member: str) -> FeatureValue:
    if kind in ("member", "count"):
        if value is None:
            return math.nan
        return float(member in value) if kind == "member" else float(len(value))
    if kind == "text":
        return None if value is None else str(value)
    return math.nan if value is None else float(value)


def point_in_time_facts(
    events: Sequence[Event], decisions: Sequence[Decision], config: EngineConfig
) -> Iterator[tuple[Decision, Facts]]:
    """One customer's decisions, each with the facts of the profile folded from the events
    strictly before it. `events` must be that customer's distinct events sorted by
    (occurred_at, event_id), `decisions` sorted by (decided_at, decision_id)."""
    profile: Profile | None = None
    position = 0
    for decision in decisions:
        while position < len(events) and events[position].occurred_at < decision.decided_at:
            event = events[position]
            if profile is None:
                profile = new_profile(event.customer_id)
            apply_in_place(profile, event, config, known_new=True)
            position += 1
        request = _request_of(decision)
        yield decision, facts_for(profile, request, at=decision.decided_at, config=config)


def _request_of(decision: Decision) -> DecisionRequest:
    return DecisionRequest(
        customer_id=decision.customer_id,
        touchpoint=decision.touchpoint,
        channel=Channel(decision.touchpoint_channel),
        context=decision.context,
        at=decision.decided_at,
    )


#: Events as an offline table (a pandas frame or an Arrow table of its columns) or objects.
EventLog: TypeAlias = pd.DataFrame | pa.Table | Iterable[Event]
DecisionLog = pd.DataFrame | Iterable[Decision]


def training_examples(
    events: EventLog,
    decisions: DecisionLog,
    outcomes: EventLog | None,
    config: EngineConfig,
    *,
    erased: Collection[str] = frozenset(),
    label_window: timedelta | None = None,
) -> pd.DataFrame:
    """Point-in-time training examples (see the module docstring for what a row is).

    `events`, `decisions` and `outcomes` are the offline tables (`OfflineStore.read`) or the
    domain objects, in any order; duplicated event ids of a customer count once. `outcomes`
    None takes the outcome events from `events`. Rows of customers whose digest
    (`engine.identity.customer_digest`) is in `erased` are left out. Labels count the outcomes
    logged within `label_window` of the decision (all of them if None). Sorted by
    (decided_at, decision_id, item_kind, item_rank, item_id).
    """
    outcome_log = _outcomes(_outcome_source(events) if outcomes is None else outcomes, erased)
    decisions_of: dict[str, list[Decision]] = {}
    for decision in _decisions(decisions, erased):
        decisions_of.setdefault(decision.customer_id, []).append(decision)
    rows: list[dict[str, Any]] = []
    for customer_id, customer_events in _histories(events, decisions_of.keys()):
        customer_decisions = sorted(
            decisions_of[customer_id], key=lambda d: (d.decided_at, d.decision_id)
        )
        for decision, facts in point_in_time_facts(customer_events, customer_decisions, config):
            features = flatten_facts(facts)
            for item in _items(decision):
                logged = outcome_log.get((decision.decision_id, item["item_id"]), [])
                labels = _labels(logged, decision.decided_at, label_window)
                rows.append({**_keys(decision), **item, **features, **labels})
    columns = [*KEY_COLUMNS, *feature_columns(), *LABEL_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    frame["outcome_at"] = pd.to_datetime(frame["outcome_at"], utc=True)
    order = ["decided_at", "decision_id", "item_kind", "item_rank", "item_id"]
    return frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


# -- inputs ------------------------------------------------------------------------------------


def _histories(events: EventLog, customers: Collection[str]) -> Iterator[tuple[str, list[Event]]]:
    """For each of `customers`, their distinct events sorted by (occurred_at, event_id).

    A table is decoded from its columns (`feature_store.offline.columnar`), a block of
    customers at a time, without validating each event again.
    """
    if isinstance(events, pd.DataFrame):
        events = events_table(events)
    if isinstance(events, pa.Table):
        without_events = set(customers)
        for customer_id, history in event_histories(events, without_events):
            without_events.discard(customer_id)
            yield customer_id, history
        for customer_id in sorted(without_events):
            yield customer_id, []
        return
    by_customer: dict[str, list[Event]] = {customer_id: [] for customer_id in customers}
    for event in events:
        if event.customer_id in by_customer:
            by_customer[event.customer_id].append(event)
    for customer_id, customer_events in by_customer.items():
        yield customer_id, _time_ordered(customer_events)


def _time_ordered(events: Iterable[Event]) -> list[Event]:
    """Sorted by (occurred_at, event_id); a resent event id counts once (the first)."""
    distinct: dict[str, Event] = {}
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        distinct.setdefault(event.event_id, event)
    return list(distinct.values())


def events_from_frame(frame: pd.DataFrame) -> Iterator[Event]:
    """The events of an offline `events` table (columns of `SCHEMAS["events"]`), validated."""
    occurred = frame["occurred_at"].to_numpy(dtype="datetime64[us]").astype(np.int64).tolist()
    for event_id, customer_id, at_us, kind, channel, touchpoint, attributes in zip(
        frame["event_id"].tolist(),
        frame["customer_id"].tolist(),
        occurred,
        frame["type"].tolist(),
        frame["channel"].tolist(),
        frame["touchpoint"].tolist(),
        frame["attributes"].tolist(),
        strict=True,
    ):
        yield Event(
            event_id=event_id,
            customer_id=customer_id,
            touchpoint=touchpoint,
            channel=channel,
            type=kind,
            occurred_at=_EPOCH + timedelta(microseconds=at_us),
            attributes=json.loads(attributes),
        )


def _outcome_source(events: EventLog) -> EventLog:
    """The outcome events of an event log."""
    if isinstance(events, pd.DataFrame):
        return events.loc[events["type"] == EventType.OUTCOME.value]
    if isinstance(events, pa.Table):
        return events.filter(pc.equal(events["type"], EventType.OUTCOME.value))
    return [event for event in events if event.type is EventType.OUTCOME]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _decisions(decisions: DecisionLog, erased: Collection[str]) -> Iterator[Decision]:
    if isinstance(decisions, pd.DataFrame):
        source: Iterable[Decision] = (
            _with_customer(Decision.model_validate_json(body), customer_id)
            for body, customer_id in zip(
                decisions["body"].tolist(), decisions["customer_id"].tolist(), strict=True
            )
        )
    else:
        source = decisions
    seen: set[str] = set()
    for decision in source:
        if decision.decision_id in seen or decision.degraded:
            continue
        seen.add(decision.decision_id)
        if not (erased and customer_digest(decision.customer_id) in erased):
            yield decision


def _with_customer(decision: Decision, customer_id: str) -> Decision:
    """The offline table's customer (the survivor of merges) over the logged body's."""
    if decision.customer_id == customer_id:
        return decision
    return decision.model_copy(update={"customer_id": customer_id})


@dataclass(frozen=True, slots=True)
class _Outcome:
    outcome: OutcomeKind
    at: datetime
    value: float | None


def _outcomes(outcomes: EventLog, erased: Collection[str]) -> dict[tuple[str, str], list[_Outcome]]:
    """Outcomes by (decision_id, target), each event id once."""
    found: dict[tuple[str, str], dict[str, _Outcome]] = {}
    for event_id, customer_id, decision_id, target, outcome, at, value in _outcome_rows(outcomes):
        if erased and customer_digest(customer_id) in erased:
            continue
        found.setdefault((decision_id, target), {})[event_id] = _Outcome(
            OutcomeKind(outcome), at, value
        )
    return {key: list(by_id.values()) for key, by_id in found.items()}


_OutcomeRow = tuple[str, str, str, str, str, datetime, float | None]


def _outcome_rows(outcomes: EventLog) -> Iterator[_OutcomeRow]:
    if isinstance(outcomes, pa.Table):
        outcomes = outcomes.to_pandas()
    if isinstance(outcomes, pd.DataFrame):
        if "decision_id" not in outcomes.columns:  # an events table: its outcome events
            outcomes = outcomes[outcomes["type"] == EventType.OUTCOME.value]
            for _, history in event_histories(events_table(outcomes)):
                yield from _outcome_rows(history)
            return
        at = pd.to_datetime(outcomes["occurred_at"], utc=True).dt.to_pydatetime().tolist()
        values = [None if pd.isna(v) else float(v) for v in outcomes["value"].tolist()]
        yield from zip(
            outcomes["event_id"].tolist(),
            outcomes["customer_id"].tolist(),
            outcomes["decision_id"].tolist(),
            outcomes["target"].tolist(),
            outcomes["outcome"].tolist(),
            at,
            values,
            strict=True,
        )
        return
    for event in outcomes:
        attributes = event.typed
        if isinstance(attributes, OutcomeAttributes):
            yield (
                event.event_id,
                event.customer_id,
                attributes.decision_id,
                attributes.target,
                attributes.outcome.value,
                event.occurred_at,
                attributes.value,
            )


# -- rows --------------------------------------------------------------------------------------


def _keys(decision: Decision) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id,
        "customer_id": decision.customer_id,
        "decided_at": decision.decided_at,
        "touchpoint": decision.touchpoint,
        "touchpoint_channel": decision.touchpoint_channel,
        "segment": decision.segment,
        "policy_version": decision.policy_version,
        "model_version": decision.model_version,
        "exploration": decision.exploration,
    }


def _items(decision: Decision) -> Iterator[dict[str, Any]]:
    for action in decision.actions:
        yield {
            "item_kind": "action",
            "item_id": action.id,
            "item_rank": float(action.rank),
            "item_propensity": action.propensity,
            "item_channel": action.channel,
        }
    for default in decision.defaults:
        yield {
            "item_kind": "default",
            "item_id": default.id,
            "item_rank": math.nan,
            "item_propensity": math.nan,
            "item_channel": decision.touchpoint_channel,
        }


def _labels(
    outcomes: Sequence[_Outcome], decided_at: datetime, window: timedelta | None
) -> dict[str, Any]:
    """The strongest outcome within the window, flags of accepted (or converted), converted
    and declined, the converted value (EUR) and the time of the first outcome."""
    counted = [
        o
        for o in outcomes
        if o.at >= decided_at and (window is None or o.at <= decided_at + window)
    ]
    kinds = {o.outcome for o in counted}
    strongest = next((kind for kind in OUTCOME_STRENGTH if kind in kinds), None)
    return {
        "outcome": None if strongest is None else strongest.value,
        "accepted": bool(kinds & {OutcomeKind.ACCEPTED, OutcomeKind.CONVERTED}),
        "converted": OutcomeKind.CONVERTED in kinds,
        "declined": OutcomeKind.DECLINED in kinds,
        "value": sum(o.value or 0.0 for o in counted if o.outcome is OutcomeKind.CONVERTED),
        "outcome_at": min((o.at for o in counted), default=None),
    }
