"""Point-in-time training examples, replayed from the Parquet logs of a real SQLite store.

The scenario serves decisions the way the API does (`decide_for` with the retail-bank
catalogue) while events arrive out of time order, and records what the online store's profile
said at each decision. Replay must give those same features, and nothing that came later.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import feature_store.offline.replay as replay
from api.serving import decide_for, record_outcome
from engine.arbitration import Exploration
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.decision import Decision, DecisionRequest
from engine.events import Channel, Event, OutcomeKind
from engine.facts import facts_for
from engine.fold import FoldStatus, apply_in_place
from engine.identity import customer_digest
from engine.next_best_action import DecisionPolicy
from engine.profile import Profile
from feature_store.base import OnlineStore
from feature_store.factory import open_store
from feature_store.offline.export import OfflineStore
from feature_store.offline.replay import (
    KEY_COLUMNS,
    LABEL_COLUMNS,
    FeatureValue,
    feature_columns,
    flatten_facts,
    training_examples,
)
from tests.feature_store.contract import CONFIG, T0, decision, withdrawal

POLICY = DecisionPolicy(
    catalogue=load_catalogue(RETAIL_BANK_CATALOGUE), exploration=Exploration(strategy="off")
)
CUSTOMERS = ("cust-1", "cust-2")
ANSWERS = (OutcomeKind.ACCEPTED, OutcomeKind.DECLINED, OutcomeKind.CONVERTED)


@dataclass
class Scenario:
    """A store after the scenario, its offline export, and what was seen online."""

    store: OnlineStore
    offline: OfflineStore
    online_features: dict[str, dict[str, FeatureValue]]  # by decision id
    answers: dict[tuple[str, str], OutcomeKind]  # (decision id, item id) -> recorded answer
    decided: dict[str, tuple[datetime, str]]  # decision id -> (decided_at, customer_id)

    def examples(self, **options: Any) -> pd.DataFrame:
        self.offline.export(self.store)
        return training_examples(
            self.offline.read("events"),
            self.offline.read("decisions"),
            self.offline.read("outcomes"),
            CONFIG,
            **options,
        )


def event(
    customer_id: str, event_id: str, type_: str, at: str, day: float, **attributes: Any
) -> Event:
    """An event of the customer at a touchpoint of the kind `at`, `day` days after T0."""
    return Event(
        event_id=f"{customer_id}-{event_id}",
        customer_id=customer_id,
        touchpoint=f"{at}-0042",
        channel=Channel(at),
        type=type_,
        occurred_at=T0 + timedelta(days=day),
        attributes=attributes,
    )


def history(customer_id: str, *, amount: int, receipt: bool, contact_by: str) -> list[Event]:
    """Ten weeks of a customer: an ATM withdrawal habit, web enquiries, contacts, feedback
    (one low score), a complaint, a stated preference and a marketing consent."""
    events = [
        withdrawal(
            f"{customer_id}-w{n}",
            customer_id=customer_id,
            amount=50 if n % 5 == 4 else amount,
            receipt=receipt,
            at=T0 + timedelta(days=4 * n, hours=n % 7),
        )
        for n in range(18)
    ]
    events += [
        event(customer_id, f"b{n}", "request", "web", 6 * n + 0.3, request="balance_enquiry")
        for n in range(12)
    ]
    events += [event(customer_id, f"s{n}", "contact", contact_by, 9 * n + 0.5) for n in range(8)]
    events += [event(customer_id, f"m{n}", "contact", "email", 13 * n + 0.7) for n in range(5)]
    events += [
        event(customer_id, f"f{n}", "feedback", "atm", 10 * n + 0.2, score=3 if n == 3 else 9)
        for n in range(7)
    ]
    preference = {"key": "contact_channel", "value": contact_by}
    consent = {"purpose": "marketing", "channel": contact_by, "status": "granted"}
    events += [
        event(customer_id, "open", "complaint_opened", "call_center", 20.1, case_id="case-1"),
        event(customer_id, "close", "complaint_resolved", "call_center", 24.1, case_id="case-1"),
        event(customer_id, "pref", "preference_stated", "web", 15.2, **preference),
        event(customer_id, "mkt", "consent_changed", "web", 1.1, **consent),
    ]
    return events


def histories() -> list[Event]:
    return history("cust-1", amount=200, receipt=False, contact_by="sms") + history(
        "cust-2", amount=100, receipt=True, contact_by="email"
    )


def decision_times() -> list[tuple[datetime, Channel]]:
    """Weekly at 13:00 over the ten weeks, in turn at an ATM, on the web and in the app."""
    channels = (Channel.ATM, Channel.WEB, Channel.MOBILE_APP)
    return [
        (T0 + timedelta(days=7 * k, hours=3, minutes=30), channels[k % 3]) for k in range(1, 10)
    ]


def answer_first_item(
    store: OnlineStore, logged: Decision, answer: OutcomeKind
) -> dict[tuple[str, str], OutcomeKind]:
    """The customer answers the decision's first action (else its first default) an hour
    later; only an action can be converted (80 EUR)."""
    if logged.actions:
        item = logged.actions[0].id
    elif logged.defaults:
        item = logged.defaults[0].id
        answer = OutcomeKind.ACCEPTED if answer is OutcomeKind.CONVERTED else answer
    else:
        return {}
    value = 80.0 if answer is OutcomeKind.CONVERTED else None
    at = logged.decided_at + timedelta(hours=1)
    record_outcome(store, logged.decision_id, item, answer, at=at, value=value)
    return {(logged.decision_id, item): answer}


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    arrivals = random.Random(7)
    pending = sorted(histories(), key=lambda e: (e.occurred_at, e.event_id))
    online_features: dict[str, dict[str, FeatureValue]] = {}
    answers: dict[tuple[str, str], OutcomeKind] = {}
    decided: dict[str, tuple[datetime, str]] = {}
    with closing(open_store(f"sqlite:///{tmp_path / 'rapport.db'}", CONFIG)) as store:
        for n, (at, channel) in enumerate(decision_times()):
            # What happened before the decision arrives, in no particular order.
            due = [e for e in pending if e.occurred_at < at]
            pending = [e for e in pending if e.occurred_at >= at]
            arrivals.shuffle(due)
            store.apply_events(due)
            for customer_id in CUSTOMERS:
                request = DecisionRequest(
                    customer_id=customer_id, touchpoint=f"{channel.value}-0042", channel=channel
                )
                seen = flatten_facts(
                    facts_for(store.read_profile(customer_id), request, at=at, config=CONFIG)
                )
                logged = decide_for(store, request, at=at, policy=POLICY)
                online_features[logged.decision_id] = seen
                decided[logged.decision_id] = (at, customer_id)
                answered = answer_first_item(store, logged, ANSWERS[n % len(ANSWERS)])
                answers.update(answered)
        store.apply_events(pending)
        offline = OfflineStore(tmp_path / "offline")
        yield Scenario(store, offline, online_features, answers, decided)


def features_of(examples: pd.DataFrame) -> dict[str, dict[str, FeatureValue]]:
    """The features of each decision (the same on every row of the decision)."""
    first_rows = examples.drop_duplicates("decision_id").set_index("decision_id")
    return {
        str(decision_id): {str(name): value for name, value in row[feature_columns()].items()}
        for decision_id, row in first_rows.iterrows()
    }


def same_value(actual: object, expected: object) -> bool:
    """Equal, floats up to rounding (decayed counts are summed in arrival order online); a
    missing value is None or NaN (pandas reads a missing text as NaN)."""
    if missing(actual) or missing(expected):
        return missing(actual) and missing(expected)
    if isinstance(expected, float) and isinstance(actual, float):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
    return actual == expected


def missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def differing(actual: dict[str, FeatureValue], expected: dict[str, FeatureValue]) -> list[str]:
    assert actual.keys() == expected.keys()
    return [name for name in expected if not same_value(actual[name], expected[name])]


# -- point in time -----------------------------------------------------------------------------


def test_features_are_the_facts_the_online_profile_gave_at_each_decision(
    scenario: Scenario,
) -> None:
    examples = scenario.examples()

    replayed = features_of(examples)
    with_items = set(examples["decision_id"])
    assert len(with_items) >= 12  # most decisions returned something to learn from
    for decision_id in with_items:
        assert differing(replayed[decision_id], scenario.online_features[decision_id]) == []
    # The value segment the decision logged is the one the replayed profile gives.
    segments = examples.drop_duplicates("decision_id")
    assert (segments["segment"] == segments["profile.value_segment"]).all()


def test_events_after_a_decision_and_shuffled_logs_do_not_change_its_features(
    scenario: Scenario,
) -> None:
    before = scenario.examples()
    last_label = max(at for at, _ in scenario.decided.values()) + timedelta(hours=1)
    later = [
        withdrawal(f"later-{n}", customer_id=c, at=last_label + timedelta(days=n), amount=990)
        for c in CUSTOMERS
        for n in range(1, 6)
    ]
    scenario.store.apply_events(later)
    scenario.offline.export(scenario.store)
    shuffled = {
        table: scenario.offline.read(table).sample(frac=1.0, random_state=11)
        for table in ("events", "decisions", "outcomes")
    }

    after = training_examples(
        shuffled["events"], shuffled["decisions"], shuffled["outcomes"], CONFIG
    )

    pd.testing.assert_frame_equal(after, before)


def test_an_event_dated_between_two_decisions_reaches_only_the_later_one(
    scenario: Scenario,
) -> None:
    before = features_of(scenario.examples())
    (first_at, first), (second_at, second) = sorted(
        (at, d) for d, (at, customer_id) in scenario.decided.items() if customer_id == "cust-1"
    )[:2]
    between = first_at + (second_at - first_at) / 2
    # It arrives late: after both decisions were taken, and after the first export.
    scenario.store.apply_events([withdrawal("between", customer_id="cust-1", at=between)])

    after = features_of(scenario.examples())

    assert differing(after[first], before[first]) == []
    assert "profile.event_count" in differing(after[second], before[second])


def test_each_history_is_folded_once_whatever_the_number_of_decisions(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    folded: list[str] = []

    def counting(profile: Profile, event: Event, *args: Any, **kwargs: Any) -> FoldStatus:
        folded.append(event.event_id)
        return apply_in_place(profile, event, *args, **kwargs)

    monkeypatch.setattr(replay, "apply_in_place", counting)
    scenario.examples()

    last_decision = max(at for at, _ in scenario.decided.values())
    events = scenario.offline.read("events")
    before_last = events[events["occurred_at"] < pd.Timestamp(last_decision)]
    assert len(folded) == len(before_last)
    assert len(set(folded)) == len(folded)  # each event once


# -- labels, inputs, erasure -------------------------------------------------------------------


def test_labels_are_the_outcomes_logged_for_each_item(scenario: Scenario) -> None:
    examples = scenario.examples()

    for row in examples.to_dict("records"):
        answer = scenario.answers.get((row["decision_id"], row["item_id"]))
        expected_outcome = None if answer is None else answer.value
        assert same_value(row["outcome"], expected_outcome)
        assert row["accepted"] == (answer in (OutcomeKind.ACCEPTED, OutcomeKind.CONVERTED))
        assert row["declined"] == (answer is OutcomeKind.DECLINED)
        assert row["converted"] == (answer is OutcomeKind.CONVERTED)
        assert row["value"] == (80.0 if answer is OutcomeKind.CONVERTED else 0.0)
    assert set(scenario.answers.values()) == set(ANSWERS)
    assert examples.columns.tolist() == [*KEY_COLUMNS, *feature_columns(), *LABEL_COLUMNS]


def test_outcomes_after_the_label_window_are_not_labels(scenario: Scenario) -> None:
    examples = scenario.examples(label_window=timedelta(minutes=30))  # answers came after 1 h

    assert examples["outcome"].isna().all()
    assert not examples["accepted"].any()


def test_domain_objects_give_the_same_examples_as_the_offline_tables(
    scenario: Scenario,
) -> None:
    store = scenario.store
    events = [e for c in CUSTOMERS for e in reversed(store.customer_events(c))]
    decisions = [store.read_decision(d) for d in scenario.decided]

    from_objects = training_examples(events, [d for d in decisions if d], None, CONFIG)

    pd.testing.assert_frame_equal(from_objects, scenario.examples())


def test_erased_customers_give_no_examples(scenario: Scenario) -> None:
    examples = scenario.examples(erased={customer_digest("cust-1")})

    assert set(examples["customer_id"]) == {"cust-2"}


def test_an_event_at_the_decision_time_is_not_before_it() -> None:
    logged = decision("dec-1").model_copy(update={"decided_at": T0})
    events = [
        withdrawal("before", at=T0 - timedelta(microseconds=1)),
        withdrawal("same-time", at=T0),  # e.g. the decision's own exposures
    ]

    [example] = training_examples(events, [logged], [], CONFIG).to_dict("records")

    assert example["profile.event_count"] == 1.0
    assert example["profile.known"] == 1.0


def test_a_decision_for_a_customer_without_earlier_events_has_an_empty_profile() -> None:
    logged = decision("dec-1", customer_id="cust-new").model_copy(update={"decided_at": T0})
    later = withdrawal("later", customer_id="cust-new", at=T0 + timedelta(days=1))

    for events in ([later], pd.DataFrame(columns=["customer_id"])):
        [example] = training_examples(events, [logged], [], CONFIG).to_dict("records")
        assert example["profile.known"] == 0.0
        assert example["profile.event_count"] == 0.0
        assert example["item_id"] == "default:cash_withdrawal"
