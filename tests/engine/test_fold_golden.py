"""Golden profiles: the fold must keep producing, byte for byte, the JSON it produced before.

Stores persist profiles as JSON, so a faster fold must serialise exactly as the old one did and
load what the old one wrote. `tests/engine/data/golden_profiles.json` was written by the fold
as it was before its rewrite for replay speed; regenerate it only for an intended change of
the fold's semantics (which also needs a replay of stored profiles):

    .venv/bin/python -m tests.engine.test_fold_golden

Two histories:

* synthetic: customers of a seeded `training.simulation.population` population in time order,
folded as
  replay folds them (`apply_in_place`, `known_new`), with the default config;
* mixed: a seeded stream of every event type (profiling revocations, decimals, options,
  non-UTC offsets, resent events) arriving shuffled, folded with a tight config so that every
  bound evicts: half folded with `fold_with_status`, stored, loaded back and the rest folded
  in place, as a store does (statuses included); and all of it replayed (`known_new`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.events import Event, EventType
from engine.fold import apply_in_place, fold_in_place, fold_with_status, new_profile
from engine.profile import Profile
from training.simulation.population import PopulationSpec, generate_population

GOLDEN = Path(__file__).parent / "data" / "golden_profiles.json"
SPEC = PopulationSpec(customers=12, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC), days=90)
MIXED_CUSTOMERS = 10
MIXED_SEED = 5
TIGHT = EngineConfig(
    seen_capacity=24,
    habit_window=4,
    max_habit_keys=3,
    max_request_kinds=2,
    feedback_capacity=3,
    resolved_cases_kept=1,
    exposures_kept=4,
    action_declines_kept=2,
    max_actions_tracked=2,
    signatures_per_habit=2,
    default_max_declines=1,
    channel_half_life_days=7.5,
)


# ---- the synthetic population, as replay folds it --------------------------------------------


def synthetic_histories() -> dict[str, list[Event]]:
    return generate_population(SPEC).events_by_customer()


def events_digest(histories: dict[str, list[Event]]) -> str:
    """Pins the generated events: a changed generator is not a changed fold."""
    digest = hashlib.sha256()
    for customer_id in sorted(histories):
        for event in histories[customer_id]:
            digest.update(event.model_dump_json().encode())
    return digest.hexdigest()


def fold_synthetic(histories: dict[str, list[Event]]) -> dict[str, str]:
    config = EngineConfig()
    profiles = {}
    for customer_id, events in sorted(histories.items()):
        profile = new_profile(customer_id)
        for event in events:
            apply_in_place(profile, event, config, known_new=True)
        profiles[customer_id] = profile.model_dump_json()
    return profiles


# ---- the mixed stream, as a store folds it -----------------------------------------------------

_CHANNELS = ["atm", "web", "mobile_app", "call_center", "branch", "email", "sms", "chat"]
_OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
_T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def mixed_events(rng: random.Random, customer_id: str) -> list[Event]:
    """About 50 events of every type over 120 days, then shuffled and partly resent."""
    events = [
        _mixed_event(rng, customer_id, f"{customer_id}-m{n}") for n in range(rng.randint(30, 70))
    ]
    resent = rng.sample(events, k=len(events) // 8)
    arrival = events + resent
    rng.shuffle(arrival)
    return arrival


def _mixed_event(rng: random.Random, customer_id: str, event_id: str) -> Event:
    at = _T0 + timedelta(seconds=rng.randrange(120 * 86_400), microseconds=rng.randrange(10**6))
    at = at.astimezone(rng.choice(_OFFSETS))
    channel = rng.choice(_CHANNELS)
    kind, attributes = _mixed_attributes(rng)
    return Event(
        event_id=event_id,
        customer_id=customer_id,
        touchpoint=f"{channel}-{rng.randrange(3):04d}",
        channel=channel,
        type=kind,
        occurred_at=at,
        attributes=attributes,
    )


def _mixed_attributes(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rng.choices(
        [
            "request",
            "contact",
            "complaint_opened",
            "complaint_resolved",
            "feedback",
            "preference_stated",
            "consent_changed",
            "outcome",
            "incident_opened",
            "incident_resolved",
            "action_exposed",
        ],
        weights=[12, 3, 1, 1, 2, 1, 1, 3, 1, 1, 2],
    )[0]
    if kind == "request":
        request: dict[str, Any] = {
            "request": rng.choice(["cash_withdrawal", "top_up", "bill_enquiry", "transfer"])
        }
        if rng.random() < 0.8:
            request["amount"] = rng.choice([50, 100, 200, "20.50", "99.99"])
            request["currency"] = rng.choice(["EUR", "EUR", "USD"])
        if rng.random() < 0.7:
            request["receipt"] = rng.random() < 0.5
        if rng.random() < 0.3:
            request["options"] = {"language": rng.choice(["en", "it"]), "notes": rng.random() < 0.5}
        if rng.random() < 0.1:
            request["campaign"] = "spring"  # an extra attribute: logged, not learned from
        return kind, request
    if kind == "contact":
        return kind, {"topic": "card"} if rng.random() < 0.5 else {}
    if kind in ("complaint_opened", "complaint_resolved"):
        case = {"case_id": f"case-{rng.randrange(4)}"}
        return kind, {**case, "topic": "fees"} if rng.random() < 0.5 else case
    if kind in ("incident_opened", "incident_resolved"):
        return kind, {
            "case_id": f"inc-{rng.randrange(3)}",
            "kind": rng.choice(["failed_payment", "outage"]),
            "topic": rng.choice([None, "payments"]),
        }
    if kind == "feedback":
        return kind, {"score": rng.randrange(11)}
    if kind == "preference_stated":
        statements: list[tuple[str, list[Any]]] = [
            ("contact_channel", ["sms", "email", None]),
            ("receipt", [True, False]),
            ("language", ["en", "it"]),
        ]
        key, values = rng.choice(statements)
        return kind, {"key": key, "value": rng.choice(values), "source": rng.choice([None, "crm"])}
    if kind == "consent_changed":
        return kind, {
            "purpose": rng.choice(["service", "marketing", "profiling"]),
            "channel": rng.choice(["email", "sms", None]),
            "status": rng.choice(["granted", "granted", "denied", "revoked"]),
        }
    if kind == "action_exposed":
        return kind, {
            "decision_id": f"d-{rng.randrange(9)}",
            "action_id": rng.choice(["savings_plan", "travel_insurance", "card_upgrade"]),
            "delivery_channel": rng.choice(["email", "sms", "web"]),
            "purpose": rng.choice(["service", "marketing"]),
            "limited": rng.random() < 0.8,
        }
    if rng.random() < 0.5:
        return kind, {
            "decision_id": f"d-{rng.randrange(9)}",
            "target": rng.choice(["savings_plan", "travel_insurance", "card_upgrade"]),
            "kind": "action",
            "outcome": rng.choice(["accepted", "declined", "declined", "ignored", "converted"]),
            "value": rng.choice([None, 10.0, 250.5]),
        }
    return kind, {
        "decision_id": f"d-{rng.randrange(9)}",
        "target": "default:cash_withdrawal",
        "outcome": rng.choice(["accepted", "declined", "declined", "ignored"]),
        "request": "cash_withdrawal",
        "habit_channel": rng.choice(["atm", "web"]),
        "signature": rng.choice(["amount=200;currency='EUR';receipt=False", "amount=50", "x"]),
    }


def fold_mixed() -> dict[str, dict[str, Any]]:
    """For each customer: statuses and profiles of a store's fold, and replay's fold."""
    rng = random.Random(MIXED_SEED)
    results = {}
    for number in range(MIXED_CUSTOMERS):
        customer_id = f"mix-{number:03d}"
        arrival = mixed_events(rng, customer_id)
        half = len(arrival) // 2
        first, statuses = fold_with_status(None, arrival[:half], TIGHT)
        stored = first.model_dump_json()
        loaded = Profile.model_validate_json(stored)
        final, more = fold_in_place(loaded, customer_id, arrival[half:], TIGHT)
        replayed, _ = fold_in_place(None, customer_id, arrival, TIGHT, known_new=True)
        results[customer_id] = {
            "statuses": [status.value for status in [*statuses, *more]],
            "final": final.model_dump_json(),
            "replayed": replayed.model_dump_json(),
        }
    return results


def golden() -> dict[str, Any]:
    histories = synthetic_histories()
    return {
        "synthetic": {
            "events_sha256": events_digest(histories),
            "profiles": fold_synthetic(histories),
        },
        "mixed": fold_mixed(),
    }


# ---- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(GOLDEN.read_text())
    return loaded


def test_replay_of_the_synthetic_population_gives_the_golden_profiles(
    expected: dict[str, Any],
) -> None:
    histories = synthetic_histories()
    assert events_digest(histories) == expected["synthetic"]["events_sha256"], (
        "training.simulation.population generates other events now: regenerate the golden file "
        "with a fold known to be right, e.g. the last commit's (see the module docstring)"
    )
    profiles = fold_synthetic(histories)
    assert list(profiles) == list(expected["synthetic"]["profiles"])
    for customer_id, profile in profiles.items():
        assert profile == expected["synthetic"]["profiles"][customer_id], customer_id


def test_a_store_folding_every_event_type_gives_the_golden_profiles(
    expected: dict[str, Any],
) -> None:
    results = fold_mixed()
    assert list(results) == list(expected["mixed"])
    for customer_id, result in results.items():
        for part, value in result.items():
            assert value == expected["mixed"][customer_id][part], (customer_id, part)


def test_stored_golden_profiles_load_and_serialise_unchanged(expected: dict[str, Any]) -> None:
    stored = [
        *expected["synthetic"]["profiles"].values(),
        *(result[part] for result in expected["mixed"].values() for part in ("final", "replayed")),
    ]
    for document in stored:
        assert Profile.model_validate_json(document).model_dump_json() == document


def test_the_golden_histories_cover_every_event_type_status_and_bound(
    expected: dict[str, Any],
) -> None:
    """What the golden file pins is only as good as what its histories exercise: every event
    type, resent and late events, and (under the tight config) every bound of the profile
    filled, so that what the fold evicts is pinned too."""
    rng = random.Random(MIXED_SEED)
    arrivals = [mixed_events(rng, f"mix-{number:03d}") for number in range(MIXED_CUSTOMERS)]
    statuses = {status for result in expected["mixed"].values() for status in result["statuses"]}
    profiles = [
        Profile.model_validate_json(result[part])
        for result in expected["mixed"].values()
        for part in ("final", "replayed")
    ]

    def largest(size: Callable[[Profile], int]) -> int:
        return max(size(profile) for profile in profiles)

    assert {event.type for events in arrivals for event in events} == set(EventType)
    assert {"applied", "duplicate", "too_late"} <= statuses
    assert largest(lambda p: len(p.seen)) == TIGHT.seen_capacity
    assert largest(lambda p: len(p.habits)) == TIGHT.max_habit_keys
    assert largest(lambda p: len(p.request_channels)) == TIGHT.max_request_kinds
    assert largest(lambda p: len(p.feedback)) == TIGHT.feedback_capacity
    assert largest(lambda p: len(p.exposures)) == TIGHT.exposures_kept
    assert largest(lambda p: len(p.action_feedback)) == TIGHT.max_actions_tracked
    assert largest(lambda p: sum(1 for c in p.cases.values() if c.resolved_at)) == (
        TIGHT.resolved_cases_kept
    )
    declines = [len(a.declines) for p in profiles for a in p.action_feedback.values()]
    assert max(declines) == TIGHT.action_declines_kept
    signatures = [len(outcomes) for p in profiles for outcomes in p.default_feedback.values()]
    assert max(signatures) == TIGHT.signatures_per_habit
    assert len(expected["synthetic"]["profiles"]) == SPEC.customers
    assert GOLDEN.stat().st_size < 200_000  # reviewable in a diff


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden(), indent=1) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size:,} bytes)")  # noqa: T201
