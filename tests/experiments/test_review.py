"""From logs to a review: the join of decisions, outcomes and events per customer, the verdict
rules, and the whole path on a real SQLite store fed through the serving path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.arbitration import Exploration
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.config import EngineConfig
from engine.decision import ChosenAction, Decision, ExperimentExposure, Reasons
from engine.next_best_action import DecisionPolicy
from experiments.definitions import Experiment, validated
from experiments.logs import (
    ExperimentLogs,
    LogEntry,
    OfflineLogs,
    OnlineLogs,
    join_experiment_logs,
)
from experiments.offpolicy import CandidatePolicy, greedy_candidate
from experiments.review import (
    MIN_GUARDRAIL_EVENTS,
    review_experiment,
    review_logged_experiment,
)
from experiments.simulation import SimulationSpec, simulate_experiment
from feature_store.base import OnlineStore
from feature_store.factory import open_store
from feature_store.offline.export import OfflineStore
from training.simulation.population import PopulationSpec, generate_population

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEXT = Reasons(en="x", it="x")


def experiment(**changes: Any) -> Experiment:
    data: dict[str, Any] = {
        "id": "exp-1",
        "hypothesis": "B converts more.",
        "start": T0.isoformat(),
        "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}],
        "min_units": 2,
    }
    return validated(data | changes)


# -- the join, on logs written by hand ------------------------------------------------------------


@dataclass
class Logs:
    """An in-memory `LogSource`: entries appended in log order."""

    decision_entries: list[LogEntry] = field(default_factory=list)
    event_entries: list[LogEntry] = field(default_factory=list)

    def decisions(self) -> Iterator[LogEntry]:
        return iter(self.decision_entries)

    def events(self) -> Iterator[LogEntry]:
        return iter(self.event_entries)

    def decide(
        self, decision_id: str, customer: str, hours: float, variant: str | None, action: str = "a1"
    ) -> None:
        at = T0 + timedelta(hours=hours)
        chosen = ChosenAction(
            id=action, kind="sales", rank=1, score=1.0, propensity=0.5, channel="web",
            title=TEXT, message=TEXT, reasons=TEXT, reason_codes=[],
        )  # fmt: skip
        decision = Decision(
            decision_id=decision_id,
            customer_id=customer,
            touchpoint="web-1",
            touchpoint_channel="web",
            decided_at=at,
            known_customer=True,
            actions=[chosen],
            policy_version="p",
            experiments=[] if variant is None else [ExperimentExposure(experiment_id="exp-1",
                                                                        variant=variant)],
        )  # fmt: skip
        self.decision_entries.append(LogEntry(customer, at, decision.model_dump_json()))

    def event(self, customer: str, hours: float, type_: str, **attributes: Any) -> None:
        text = json.dumps({"type": type_, "attributes": attributes}, separators=(",", ":"))
        self.event_entries.append(LogEntry(customer, T0 + timedelta(hours=hours), text))

    def outcome(
        self, customer: str, hours: float, decision_id: str, outcome: str, **more: Any
    ) -> None:
        target = more.pop("target", "a1")
        self.event(customer, hours, "outcome", decision_id=decision_id, target=target,
                   outcome=outcome, kind="action", **more)  # fmt: skip


def test_each_customer_is_one_unit_with_exposures_value_covariate_and_guardrails() -> None:
    logs = Logs()
    logs.decide("d1", "c1", 1, "A")
    logs.decide("d2", "c1", 5, "A")
    logs.decide("d3", "c2", 2, "B")
    logs.decide("d0", "c1", -100, None)  # before the experiment, outside it
    logs.outcome("c1", -99, "d0", "accepted")  # pre-period: the covariate
    logs.outcome("c1", 6, "d2", "accepted")
    logs.outcome("c1", 7, "d2", "converted", value=120.0)  # the same unit converts once
    logs.outcome("c2", 3, "d3", "declined")
    logs.event("c2", 1, "complaint_opened", case_id="k0")  # before c2's first exposure
    logs.event("c1", 8, "complaint_opened", case_id="k1")
    logs.event("c2", 9, "consent_changed", purpose="marketing", status="revoked")
    logs.event("c1", 9, "feedback", score=6)
    logs.event("c1", 10, "feedback", score=9)

    joined = join_experiment_logs(experiment(), logs, at=T0 + timedelta(days=1))

    units = joined.units.set_index("unit_id")
    assert list(units["variant"]) == ["A", "B"]
    assert units.loc[
        "c1", ["exposures", "value", "covariate", "complaint", "opt_out"]
    ].tolist() == [2, 1.0, 1.0, 1.0, 0.0]
    assert units.loc[
        "c2", ["exposures", "value", "covariate", "complaint", "opt_out"]
    ].tolist() == [1, 0.0, 0.0, 0.0, 1.0]
    assert units.loc["c1", "feedback_score"] == 7.5
    assert np.isnan(units.loc["c2", "feedback_score"])
    assert joined.metric_events[["unit_id", "amount"]].values.tolist() == [["c1", 1.0]]
    rewards = {d.decision_id: d.reward for d in joined.decisions}
    assert rewards == {"d1": 0.0, "d2": 1.0, "d3": 0.0}  # fmt: skip


def test_the_value_metric_sums_the_eur_of_conversions() -> None:
    logs = Logs()
    logs.decide("d1", "c1", 1, "A")
    logs.decide("d2", "c1", 2, "A", action="a2")
    logs.outcome("c1", 3, "d1", "accepted")
    logs.outcome("c1", 4, "d1", "converted", value=120.0)
    logs.outcome("c1", 5, "d2", "converted", value=30.0, target="a2")

    joined = join_experiment_logs(
        experiment(primary_metric="value"), logs, at=T0 + timedelta(days=1)
    )

    assert joined.units["value"].tolist() == [150.0]
    assert [d.reward for d in joined.decisions] == [120.0, 30.0]


def test_a_customer_moved_by_a_weight_change_stays_in_the_first_variant() -> None:
    logs = Logs()
    logs.decide("d1", "c1", 1, "A")
    logs.decide("d2", "c1", 30, "B")  # after the weights changed
    logs.outcome("c1", 31, "d2", "accepted")

    joined = join_experiment_logs(experiment(), logs, at=T0 + timedelta(days=2))

    assert joined.crossovers == 1
    assert joined.units[["variant", "exposures", "value"]].values.tolist() == [["A", 1, 0.0]]


def test_entries_after_the_review_time_are_left_out() -> None:
    logs = Logs()
    logs.decide("d1", "c1", 1, "A")
    logs.decide("d2", "c2", 30, "B")
    logs.outcome("c1", 30, "d1", "accepted")

    joined = join_experiment_logs(experiment(), logs, at=T0 + timedelta(hours=20))

    assert joined.units[["unit_id", "value"]].values.tolist() == [["c1", 0.0]]


# -- the verdict, on per-unit frames with a known answer -----------------------------------------


def frame_logs(
    rates: dict[str, float], units: int, seed: int = 1, **guardrail_rates: dict[str, float]
) -> ExperimentLogs:
    """Per-unit frames drawn with known conversion and guardrail rates per variant."""
    rng = np.random.default_rng(seed)
    complaint_rates = guardrail_rates.get("complaint", {})
    rows = []
    for variant, rate in rates.items():
        for i in range(units):
            rows.append({
                "unit_id": f"{variant}-{i}", "variant": variant,
                "first_exposed_at": T0 + timedelta(minutes=i), "exposures": 1,
                "value": float(rng.random() < rate), "covariate": 0.0,
                "complaint": float(rng.random() < complaint_rates.get(variant, 0.05)),
                "opt_out": float(rng.random() < 0.05), "feedback_score": float(rng.integers(6, 11)),
            })  # fmt: skip
    events = pd.DataFrame(
        [
            (r["unit_id"], r["variant"], r["first_exposed_at"] + timedelta(hours=1), 1.0)
            for r in rows
            if r["value"]
        ],
        columns=["unit_id", "variant", "at", "amount"],
    )
    return ExperimentLogs(units=pd.DataFrame(rows), metric_events=events)


GENEROUS = [
    {"metric": "complaint_rate", "margin": 0.05},
    {"metric": "feedback_score", "margin": 1.0},
]


def test_a_clear_gain_with_guardrails_held_is_shipped() -> None:
    review = review_experiment(
        experiment(guardrails=GENEROUS, min_units=100), frame_logs({"A": 0.10, "B": 0.16}, 4000),
        at=T0 + timedelta(days=3),
    )  # fmt: skip

    assert review.verdict.decision == "ship"
    assert review.verdict.variant == "B"
    assert review.sample_ratio is not None
    assert not review.sample_ratio.mismatch
    assert {v.verdict for row in review.guardrails for v in row.verdicts} == {"pass"}
    assert len(review.series) == 2
    assert review.series[1].points[-1].value == pytest.approx(review.variants[1].mean)


def test_a_gain_with_a_broken_guardrail_is_not_shipped() -> None:
    logs = frame_logs({"A": 0.10, "B": 0.16}, 4000, complaint={"A": 0.02, "B": 0.10})
    review = review_experiment(experiment(guardrails=GENEROUS[:1]), logs, at=T0 + timedelta(days=3))

    assert review.verdict.decision == "don't ship"
    assert "complaint_rate" in " ".join(review.verdict.reasons)


def test_unbalanced_traffic_is_a_sample_ratio_mismatch_whatever_the_lift() -> None:
    logs = frame_logs({"A": 0.10, "B": 0.16}, 4000)
    logs.units = logs.units.iloc[: 4000 + 3000]  # a quarter of B's customers lost

    review = review_experiment(experiment(guardrails=GENEROUS), logs, at=T0 + timedelta(days=3))

    assert review.sample_ratio is not None
    assert review.sample_ratio.mismatch
    assert review.verdict.decision == "don't ship"
    assert "traffic split" in review.verdict.headline


def test_no_difference_keeps_running_until_the_experiment_stops() -> None:
    logs = frame_logs({"A": 0.10, "B": 0.10}, 1500, seed=3)
    running = review_experiment(experiment(guardrails=GENEROUS), logs, at=T0 + timedelta(days=3))
    stopped = review_experiment(
        experiment(guardrails=GENEROUS, stop=(T0 + timedelta(days=2)).isoformat()), logs,
        at=T0 + timedelta(days=3),
    )  # fmt: skip

    assert running.verdict.decision == "keep running"
    assert stopped.verdict.decision == "don't ship"


def test_too_few_customers_keep_it_running() -> None:
    review = review_experiment(
        experiment(min_units=500), frame_logs({"A": 0.1, "B": 0.5}, 100), at=T0 + timedelta(days=1)
    )

    assert review.verdict.decision == "keep running"
    assert review.analysis is not None  # analysed, but judged only from min_units on


def test_a_rare_guardrail_without_events_is_not_judged_and_holds_back_a_ship() -> None:
    logs = frame_logs({"A": 0.10, "B": 0.16}, 4000, complaint={"A": 0.0, "B": 0.0})
    review = review_experiment(experiment(guardrails=GENEROUS[:1]), logs, at=T0 + timedelta(days=3))

    [complaints] = review.guardrails
    assert complaints.verdicts == []
    assert complaints.note == f"0 events so far; {MIN_GUARDRAIL_EVENTS} needed"
    assert complaints.means == {"A": 0.0, "B": 0.0}
    assert review.verdict.decision == "keep running"
    assert review.verdict.variant == "B"  # it would ship but for the unjudged guardrail
    assert "complaint_rate cannot yet rule out harm" in review.verdict.headline


# -- the whole path on a real store ---------------------------------------------------------------

END = datetime(2026, 1, 1, tzinfo=UTC)
HOLDOUT = {
    "id": "nba-holdout",
    "hypothesis": "Personalised actions convert more than the holdout.",
    "start": (END + timedelta(days=30)).isoformat(),
    "stop": (END + timedelta(days=44)).isoformat(),
    "variants": [
        {"name": "holdout", "weight": 1, "personalisation": False},
        {"name": "personalised", "weight": 1},
    ],
    "min_units": 20,
}
POLICY = DecisionPolicy(
    catalogue=load_catalogue(RETAIL_BANK_CATALOGUE), exploration=Exploration(epsilon=0.1)
)


@pytest.fixture(scope="module")
def population_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OnlineStore, list[str]]]:
    """150 synthetic customers in a real SQLite store; the decision logs start empty."""
    from api.cli.common import load_events

    path: Path = tmp_path_factory.mktemp("store") / "rapport.db"
    population = generate_population(
        PopulationSpec(customers=150, seed=11, start=END - timedelta(days=90), days=90)
    )
    with closing(open_store(f"sqlite:///{path}", EngineConfig())) as store:
        load_events(store, population.events)
        yield store, sorted({e.customer_id for e in population.events})


@pytest.fixture(scope="module")
def simulated(population_store: tuple[OnlineStore, list[str]]) -> tuple[OnlineStore, Experiment]:
    store, customers = population_store
    served = validated(HOLDOUT | {"variants": [
        {"name": "holdout", "weight": 1, "personalisation": False},
        {"name": "personalised", "weight": 2},  # deliberately not what the definition says
    ]})  # fmt: skip
    spec = SimulationSpec(decisions=600, pre_period_decisions=150, seed=3)
    simulate_experiment(store, served, customers, policy=POLICY, spec=spec)
    return store, validated(HOLDOUT)


def test_a_customer_gets_one_variant_at_every_touchpoint(
    simulated: tuple[OnlineStore, Experiment],
) -> None:
    store, _ = simulated
    variants: dict[str, set[str]] = {}
    channels: dict[str, set[str]] = {}
    for entry in OnlineLogs(store).decisions():
        for exposure in entry.body["experiments"]:
            variants.setdefault(entry.customer_id, set()).add(exposure["variant"])
            channels.setdefault(entry.customer_id, set()).add(entry.body["touchpoint_channel"])

    assert variants
    assert all(len(v) == 1 for v in variants.values())
    assert sum(len(c) >= 3 for c in channels.values()) > 10  # many asked from 3+ channels


def test_holdout_decisions_are_logged_without_personalisation(
    simulated: tuple[OnlineStore, Experiment],
) -> None:
    store, _ = simulated
    holdout = [
        entry.body for entry in OnlineLogs(store).decisions()
        if entry.body["experiments"] and entry.body["experiments"][0]["variant"] == "holdout"
    ]  # fmt: skip

    assert holdout
    assert all(body["defaults"] == [] and body["segment"] == "mass" for body in holdout)
    assert {c["source"] for body in holdout if (c := body["channel"])} <= {"stated", "population"}


def test_deliberately_unbalanced_assignment_is_flagged_from_the_logs(
    simulated: tuple[OnlineStore, Experiment],
) -> None:
    store, definition = simulated

    review = review_logged_experiment(
        definition, OnlineLogs(store), at=END + timedelta(days=50),
        candidate=greedy_candidate(POLICY.catalogue),
    )  # fmt: skip

    assert review.sample_ratio is not None
    assert review.sample_ratio.mismatch
    assert review.verdict.decision == "don't ship"
    counts = {row.variant: row.units for row in review.variants}
    assert counts["personalised"] > 1.5 * counts["holdout"]
    decisions = sum(1 for e in OnlineLogs(store).decisions() if e.body["experiments"])
    assert sum(row.exposures for row in review.variants) == decisions
    assert review.analysis is not None
    assert review.analysis.cuped is not None
    assert review.offpolicy is not None
    assert review.offpolicy.decisions > 10


def test_the_served_weights_show_no_mismatch(simulated: tuple[OnlineStore, Experiment]) -> None:
    store, definition = simulated
    served = definition.with_weights({"holdout": 1, "personalised": 2})

    review = review_logged_experiment(served, OnlineLogs(store), at=END + timedelta(days=50))

    assert review.sample_ratio is not None
    assert not review.sample_ratio.mismatch
    assert review.offpolicy is None  # no candidate given


def test_an_injected_off_policy_candidate_is_evaluated(
    simulated: tuple[OnlineStore, Experiment],
) -> None:
    store, definition = simulated
    logs = join_experiment_logs(definition, OnlineLogs(store), at=END + timedelta(days=50))
    as_logged = CandidatePolicy("as-logged", "the logged policy", lambda d, a: a.propensity)

    review = review_experiment(definition, logs, at=END + timedelta(days=50), candidate=as_logged)

    assert review.offpolicy is not None
    # On-policy, every importance weight is 1: the estimate is the logged value exactly.
    assert review.offpolicy.headline.value == pytest.approx(review.offpolicy.logged_value)
    assert review.offpolicy.headline.effective_sample_size == pytest.approx(
        review.offpolicy.decisions
    )


def test_the_offline_store_gives_the_same_units_as_the_online_logs(
    simulated: tuple[OnlineStore, Experiment], tmp_path: Path
) -> None:
    store, definition = simulated
    OfflineStore(tmp_path / "offline").export(store)
    at = END + timedelta(days=50)

    online = join_experiment_logs(definition, OnlineLogs(store), at=at)
    offline = join_experiment_logs(definition, OfflineLogs(tmp_path / "offline"), at=at)

    pd.testing.assert_frame_equal(offline.units, online.units)
    assert [d.reward for d in offline.decisions] == [d.reward for d in online.decisions]
