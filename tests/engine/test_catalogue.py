"""The action catalogue: the shipped one loads; anything unknown, unsafe or code-like does not."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings

from engine.catalogue import (
    RETAIL_BANK_CATALOGUE,
    Action,
    ActionKind,
    Catalogue,
    CatalogueError,
    check_plain_text,
    load_catalogue,
    load_catalogue_text,
)
from engine.config import EngineConfig
from engine.decision import DecisionRequest
from engine.events import Event
from engine.facts import ProblemKind, facts_for
from engine.fold import fold
from engine.preferences import Purpose
from engine.profile import Profile
from tests.engine.builders import T0, event, event_lists, withdrawal

CONFIG = EngineConfig()
BANK = load_catalogue(RETAIL_BANK_CATALOGUE)


def an_action(**overrides: Any) -> dict[str, Any]:
    action: dict[str, Any] = {
        "id": "savings_plan",
        "kind": "sales",
        "purpose": "marketing",
        "channels": ["web", "mobile_app"],
        "value": 180,
        "weight": 1.0,
        "validity": {"valid_from": date(2026, 1, 1), "valid_until": date(2026, 12, 31)},
        "cooldown_days": 30,
        "caps": [{"count": 2, "days": 7}],
        "eligibility": {
            "all": [
                {"field": "profile.event_count", "op": "ge", "value": 5},
                {"field": "context.channel", "op": "in", "value": ["web", "mobile_app"]},
                {"not": {"has_open_case": "any"}},
            ]
        },
        "title": {"en": "Start a savings plan", "it": "Inizia un piano di risparmio"},
        "message": {"en": "From 50 EUR a month.", "it": "Da 50 EUR al mese."},
    }
    action.update(overrides)
    return action


def catalogue_text(*actions: dict[str, Any], **top: Any) -> str:
    document = {"version": "test-v1", "actions": list(actions or [an_action()]), **top}
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def refusal(text: str) -> CatalogueError:
    with pytest.raises(CatalogueError) as info:
        load_catalogue_text(text)
    return info.value


def ask(profile: Profile | None, channel: str = "web", at_days: float = 120, **context: Any) -> Any:
    request = DecisionRequest(
        customer_id="cust-1",
        touchpoint=f"{channel}-0042",
        channel=channel,
        context=context,
    )
    return facts_for(profile, request, at=T0 + timedelta(days=at_days), config=CONFIG)


def eligible(profile: Profile | None, channel: str = "web", **context: Any) -> set[str]:
    facts = ask(profile, channel, **context)
    return {action.id for action in BANK.actions if action.is_eligible(facts)}


# ---- the shipped retail bank catalogue ----


def test_the_retail_bank_catalogue_loads_with_every_kind_of_action() -> None:
    ids = [action.id for action in BANK.actions]
    assert len(ids) >= 15
    assert len(set(ids)) == len(ids)
    assert {action.kind for action in BANK.actions} == set(ActionKind)
    assert {
        "resolve_complaint",
        "callback_offer",
        "paperless_statements",
        "mobile_app_onboarding",
        "savings_plan",
        "mortgage_renegotiation",
        "credit_card_upgrade",
        "travel_insurance",
        "usual_withdrawal",
    } <= set(ids)


def test_service_before_sales_has_help_for_every_open_problem() -> None:
    addressed = {kind for action in BANK.actions for kind in action.addresses}
    assert addressed == set(ProblemKind)
    for action in BANK.actions:
        if action.kind in (ActionKind.SALES, ActionKind.RETENTION):
            assert action.purpose is Purpose.MARKETING
        if action.kind is ActionKind.SERVICE:
            assert action.purpose is Purpose.SERVICE


def test_the_catalogue_round_trips_through_plain_data() -> None:
    dumped = yaml.safe_dump(BANK.model_dump(mode="json"), allow_unicode=True)
    assert load_catalogue_text(dumped) == BANK


def six_weekly_withdrawals(amount: int = 200) -> list[Event]:
    return [withdrawal(T0 + timedelta(weeks=w), amount=amount) for w in range(6)]


def test_an_open_complaint_gets_help_and_no_sales() -> None:
    complaint = event("complaint_opened", at=T0 + timedelta(days=100), channel="call_center",
                      case_id="case-1", topic="rude_service")  # fmt: skip
    affluent = fold(None, [*six_weekly_withdrawals(250), complaint])
    assert "resolve_complaint" in eligible(affluent, "call_center")
    assert "savings_plan" not in eligible(affluent, "web")
    resolved = fold(affluent, [event("complaint_resolved", at=T0 + timedelta(days=101),
                                     channel="call_center", case_id="case-1")])  # fmt: skip
    assert "resolve_complaint" not in eligible(resolved, "call_center")
    assert "savings_plan" in eligible(resolved, "web")


def test_the_usual_withdrawal_is_offered_at_the_atm_only() -> None:
    profile = fold(None, six_weekly_withdrawals())
    assert "usual_withdrawal" in eligible(profile, "atm")
    assert "usual_withdrawal" not in eligible(profile, "web")
    assert "usual_withdrawal" not in eligible(None, "atm")


def test_mortgage_renegotiation_needs_a_rate_drop_and_a_mortgage() -> None:
    profile = fold(None, six_weekly_withdrawals())
    drop = {"mortgage_rate_drop_bp": 30}
    assert "mortgage_renegotiation" in eligible(profile, market=drop, products=["mortgage"])
    assert "mortgage_renegotiation" not in eligible(profile, market=drop)
    small = {"mortgage_rate_drop_bp": 10}
    assert "mortgage_renegotiation" not in eligible(profile, market=small, products=["mortgage"])


def test_validity_dates_are_inclusive() -> None:
    action = Catalogue.model_validate(yaml.safe_load(catalogue_text())).actions[0]
    assert action.is_valid_on(date(2026, 1, 1))
    assert action.is_valid_on(date(2026, 12, 31))
    assert not action.is_valid_on(date(2027, 1, 1))
    assert not action.is_valid_on(date(2025, 12, 31))


@given(events=event_lists(max_size=25))
@settings(max_examples=60, deadline=None)
def test_every_shipped_condition_evaluates_on_any_real_profile(events: list[Event]) -> None:
    facts = ask(fold(None, events), at_days=210, market={"mortgage_rate_drop_bp": 40})
    for action in BANK.actions:
        assert action.is_eligible(facts) in (True, False)


# ---- unknown keys, fields, operators and literals: refused with their path ----


def test_unknown_keys_are_refused_with_their_path() -> None:
    assert refusal(catalogue_text(colour="blue")).path == "colour"
    assert refusal(catalogue_text(an_action(colour="blue"))).path == "actions[0].colour"
    titled = an_action(title={"en": "Save", "it": "Risparmia", "fr": "Epargnez"})
    assert refusal(catalogue_text(titled)).path == "actions[0].title.fr"
    capped = an_action(caps=[{"count": 2, "days": 7, "per": "week"}])
    assert refusal(catalogue_text(capped)).path == "actions[0].caps[0].per"
    nested = an_action(eligibility={"all": [{"has_habit": "top_up"}, {"whenever": True}]})
    error = refusal(catalogue_text(an_action(id="first"), nested))
    assert error.path == "actions[1].eligibility.all[1].whenever"
    assert "not a known condition" in error.reason
    assert str(error).startswith("actions[1].eligibility.all[1].whenever: ")


@pytest.mark.parametrize(
    ("condition", "path", "reason"),
    [
        ({"field": "profile.balance", "op": "gt", "value": 1}, "field", "not a known field"),
        ({"field": "profile.event_count", "op": "like", "value": 1}, "op", "known operator"),
        ({"field": "profile.event_count", "op": "ge", "value": "five"}, "value", "a number"),
        ({"field": "context.channel", "op": "in", "value": "web"}, "value", "a list"),
        ({"field": "context.channel", "op": "eq", "value": "fax"}, "value", "one of"),
    ],
)
def test_bad_conditions_are_refused_at_load_with_their_path(
    condition: dict[str, Any], path: str, reason: str
) -> None:
    eligibility = {"all": [{"has_habit": "top_up"}, condition]}
    error = refusal(catalogue_text(an_action(eligibility=eligibility)))
    assert error.path == f"actions[0].eligibility.all[1].{path}"
    assert reason in error.reason


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ({"purpose": "service"}, "actions[0].purpose", "purpose marketing"),
        ({"purpose": "profiling"}, "actions[0].purpose", "purpose marketing"),
        ({"addresses": ["complaint"]}, "actions[0].addresses", "only service"),
        ({"channels": ["web", "web"]}, "actions[0].channels", "repeat"),
        ({"channels": ["web", "fax"]}, "actions[0].channels[1]", "Input should be"),
        ({"channels": []}, "actions[0].channels", "at least 1"),
        ({"value": -1}, "actions[0].value", "greater than or equal to 0"),
        ({"value": "100"}, "actions[0].value", "valid number"),
        ({"weight": 0}, "actions[0].weight", "greater than 0"),
        ({"cooldown_days": 1.5}, "actions[0].cooldown_days", "valid integer"),
        ({"caps": [{"count": 1, "days": 7}, {"count": 2, "days": 7}]}, "actions[0].caps", "same"),
        (
            {"validity": {"valid_from": date(2026, 2, 1), "valid_until": date(2026, 1, 1)}},
            "actions[0].validity.valid_until",
            "before valid_from",
        ),
        ({"validity": {"valid_from": "soon"}}, "actions[0].validity.valid_from", "valid date"),
        ({"id": "Savings Plan"}, "actions[0].id", "a name"),
        ({"title": {"en": "Save"}}, "actions[0].title.it", "is required"),
    ],
)
def test_inconsistent_actions_are_refused_with_their_path(
    change: dict[str, Any], path: str, reason: str
) -> None:
    error = refusal(catalogue_text(an_action(**change)))
    assert (error.path, reason in error.reason) == (path, True), error


def test_action_ids_are_unique() -> None:
    error = refusal(catalogue_text(an_action(), an_action(id="other"), an_action()))
    assert error.path == "actions[2].id"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- just\n- a list\n", "must be a mapping"),
        ("version: v1\nversion: v2\nactions: []\n", "repeats the key version on line 2"),
        ("version: [unclosed\n", "not plain YAML at line"),
        ("x" * 1_000_001, "longer than"),
    ],
)
def test_documents_that_are_not_a_plain_catalogue_are_refused(text: str, reason: str) -> None:
    error = refusal(text)
    assert error.path == ""
    assert reason in error.reason


def test_every_problem_is_listed(tmp_path: Path) -> None:
    error = refusal(catalogue_text(an_action(colour="blue", weight=-1)))
    assert {path for path, _ in error.problems} == {"actions[0].colour", "actions[0].weight"}
    assert "(and 1 more)" in str(error)
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(tmp_path / "missing.yaml")


# ---- injection attempts: refused, never executed ----

PAYLOADS = [
    "__import__('os').system('x')",
    "${jndi:ldap://x}",
    "{{ 7*7 }}",
    "{% for x in y %}",
    "os.system",
    "`id`",
    "lambda: 0",
    "<script>alert(1)</script>",
    "%(password)s",
]


def _at(*keys: Any) -> Callable[[dict[str, Any], str], None]:
    def place(action: dict[str, Any], payload: str) -> None:
        target = action
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = payload

    return place


def _condition(make: Callable[[str], dict[str, Any]]) -> Callable[[dict[str, Any], str], None]:
    def place(action: dict[str, Any], payload: str) -> None:
        action["eligibility"] = {"all": [{"has_habit": "top_up"}, make(payload)]}

    return place


PLACES: dict[str, Callable[[dict[str, Any], str], None]] = {
    "actions[0].id": _at("id"),
    "actions[0].kind": _at("kind"),
    "actions[0].purpose": _at("purpose"),
    "actions[0].channels[1]": _at("channels", 1),
    "actions[0].value": _at("value"),
    "actions[0].cooldown_days": _at("cooldown_days"),
    "actions[0].caps[0].days": _at("caps", 0, "days"),
    "actions[0].validity.valid_until": _at("validity", "valid_until"),
    "actions[0].title.en": _at("title", "en"),
    "actions[0].message.it": _at("message", "it"),
    "actions[0].addresses[0]": lambda action, payload: action.update(
        kind="service", purpose="service", addresses=[payload]
    ),
    "actions[0].eligibility.all[1].field": _condition(
        lambda p: {"field": p, "op": "eq", "value": 1}
    ),
    "actions[0].eligibility.all[1].op": _condition(
        lambda p: {"field": "profile.event_count", "op": p, "value": 1}
    ),
    "actions[0].eligibility.all[1].value": _condition(
        lambda p: {"field": "context.touchpoint", "op": "eq", "value": p}
    ),
    "actions[0].eligibility.all[1].value[0]": _condition(
        lambda p: {"field": "context.request", "op": "in", "value": [p]}
    ),
    "actions[0].eligibility.all[1].has_habit": _condition(lambda p: {"has_habit": p}),
    "actions[0].eligibility.all[1].has_open_case": _condition(lambda p: {"has_open_case": p}),
}


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("path", sorted(PLACES))
def test_injection_in_any_field_is_refused_with_its_path(path: str, payload: str) -> None:
    action = copy.deepcopy(an_action())
    PLACES[path](action, payload)
    error = refusal(catalogue_text(action))
    assert error.path == path, error
    assert payload not in str(error)  # the error names the place, it does not echo the payload


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_in_a_version_or_a_key_is_refused(payload: str) -> None:
    assert refusal(catalogue_text(version=payload)).path == "version"
    error = refusal(catalogue_text(an_action(**{payload: 1})))
    assert error.path.startswith("actions[0].")
    assert error.reason == "is not an allowed key"
    assert payload not in str(error)


TAGGED = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
    '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tagged", TAGGED)
def test_a_yaml_python_tag_is_refused_and_nothing_runs(tmp_path: Path, tagged: str) -> None:
    marker = tmp_path / "executed"
    value = tagged.format(marker=marker)
    documents = [
        value,
        f"version: v1\nactions: {value}\n",
        catalogue_text().replace("Start a savings plan", value),
        catalogue_text().replace("value: 180", f"value: {value}"),
    ]
    for document in documents:
        error = refusal(document)
        assert "not plain YAML" in error.reason
        assert "python/" in error.reason
    assert not marker.exists()


def test_the_marker_would_catch_an_unsafe_loader(tmp_path: Path) -> None:
    # The control for the test above: an unsafe loader does run the tag and leave the marker.
    marker = tmp_path / "executed"
    yaml.load(TAGGED[0].format(marker=marker), Loader=yaml.UnsafeLoader)
    assert marker.exists()


def test_the_shipped_texts_are_plain_and_bilingual() -> None:
    for action in BANK.actions:
        assert isinstance(action, Action)
        for text in (action.title, action.message):
            assert text.en != text.it


@pytest.mark.parametrize(
    "text",
    ["Save 3% a year: it's free (no fees).", "Perché l'app è più veloce? Così, già!", "50 € + 2"],
)
def test_plain_text_allows_ordinary_punctuation_and_accents(text: str) -> None:
    assert check_plain_text(text) == text
