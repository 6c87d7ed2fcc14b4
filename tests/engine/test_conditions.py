"""The condition language: parsed and checked against the field registry, evaluated without code."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from engine.conditions import (
    LIST_OPERATORS,
    MAX_DEPTH,
    OPERATORS_BY_TYPE,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    ConditionError,
    HasHabit,
    HasOpenCase,
    Not,
    compile_condition,
    condition_data,
    evaluate,
    parse_condition,
)
from engine.facts import FIELDS, Facts, FactType, FieldSpec, ProblemKind


def refusal(data: object) -> ConditionError:
    with pytest.raises(ConditionError) as info:
        parse_condition(data)
    return info.value


def facts(
    values: dict[str, Any] | None = None,
    open_problems: tuple[str, ...] = (),
    habits: tuple[str, ...] = (),
) -> Facts:
    return Facts(values or {}, frozenset(open_problems), frozenset(habits))


def cmp(field: str, op: str, value: Any) -> Condition:
    return parse_condition({"field": field, "op": op, "value": value})


# ---- parsing ----


def test_every_form_parses_into_frozen_nodes_and_back() -> None:
    data = {
        "all": [
            {"field": "profile.event_count", "op": "ge", "value": 5},
            {"any": [{"has_open_case": "complaint"}, {"has_habit": "cash_withdrawal"}]},
            {"not": {"field": "profile.uses_channel", "op": "in", "value": ["mobile_app"]}},
        ]
    }
    condition = parse_condition(data)
    assert condition == AllOf(
        (
            Compare("profile.event_count", "ge", 5),
            AnyOf((HasOpenCase("complaint"), HasHabit("cash_withdrawal"))),
            Not(Compare("profile.uses_channel", "in", ("mobile_app",))),
        )
    )
    assert condition_data(condition) == data
    assert isinstance(condition, AllOf)
    with pytest.raises(FrozenInstanceError):
        condition.conditions = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ({"field": "profile.evnt_count", "op": "ge", "value": 1}, "field", "did you mean"),
        ({"field": "__import__('os')", "op": "eq", "value": 1}, "field", "not a known field"),
        ({"field": ["profile.event_count"], "op": "eq", "value": 1}, "field", "field name"),
        ({"field": "profile.event_count", "op": "matches", "value": 1}, "op", "known operator"),
        ({"field": "profile.event_count", "op": "==", "value": 1}, "op", "known operator"),
        ({"field": "context.channel", "op": "lt", "value": "atm"}, "op", "allowed: eq, ne, in"),
        ({"field": "profile.uses_channel", "op": "eq", "value": "atm"}, "op", "in, not_in"),
        ({"field": "profile.known", "op": "gt", "value": True}, "op", "eq, ne"),
        ({"field": "profile.event_count", "op": "ge", "value": "5"}, "value", "a number"),
        ({"field": "profile.event_count", "op": "ge", "value": True}, "value", "a number"),
        ({"field": "profile.event_count", "op": "ge", "value": float("nan")}, "value", "finite"),
        ({"field": "context.channel", "op": "eq", "value": 3}, "value", "a text value"),
        ({"field": "context.channel", "op": "eq", "value": "atmm"}, "value", "one of atm"),
        ({"field": "context.touchpoint", "op": "eq", "value": "os.system"}, "value", "a name"),
        ({"field": "profile.known", "op": "eq", "value": "true"}, "value", "true or false"),
        ({"field": "context.channel", "op": "in", "value": "atm"}, "value", "a list of 1"),
        ({"field": "context.channel", "op": "in", "value": []}, "value", "a list of 1"),
        ({"field": "context.channel", "op": "in", "value": ["atm", 7]}, "value[1]", "text"),
        ({"field": "context.channel", "op": "eq", "value": ["atm"]}, "value", "not a list"),
        ({"field": "context.channel", "op": "eq"}, "value", "is required"),
        ({"field": "context.channel", "op": "eq", "value": "atm", "x": 1}, "x", "not a key"),
        ({"nope": []}, "nope", "not a known condition"),
        ({"${jndi:ldap://x}": []}, "??jndi?ldap???x?", "not a known condition"),
        ({"all": [], "any": []}, "", "exactly one of"),
        ({"all": {"has_habit": "top_up"}}, "all", "a list of 1"),
        ({"any": []}, "any", "a list of 1"),
        ({"not": "yes"}, "not", "must be a mapping"),
        ({"has_open_case": "fraud"}, "has_open_case", "one of any, complaint"),
        ({"has_habit": "__import__"}, "has_habit", "a request kind"),
        ({"has_habit": 7}, "has_habit", "a request kind"),
        ("profile.event_count > 5", "", "must be a mapping"),
        (None, "", "must be a mapping"),
    ],
)
def test_malformed_conditions_are_refused_with_their_path(
    data: object, path: str, reason: str
) -> None:
    error = refusal(data)
    assert error.path == path
    assert reason in error.reason


def test_the_path_goes_down_to_the_culprit() -> None:
    data = {
        "all": [
            {"has_habit": "top_up"},
            {"any": [{"has_open_case": "any"}, {"not": {"field": "x.y", "op": "eq", "value": 1}}]},
        ]
    }
    assert refusal(data).path == "all[1].any[1].not.field"


def test_conditions_are_kept_small() -> None:
    deep: dict[str, Any] = {"has_habit": "top_up"}
    for _ in range(MAX_DEPTH):
        deep = {"not": deep}
    assert "too deep" in refusal(deep).reason
    wide = {"any": [{"all": [{"has_habit": "top_up"}] * 30}] * 30}
    assert "too large" in refusal(wide).reason


def test_a_comparison_cannot_be_built_invalid_even_in_code() -> None:
    with pytest.raises(ConditionError):
        Compare("profile.event_count", "ge", "5")
    with pytest.raises(ConditionError):
        Compare("profile.segment", "eq", "mass")


# ---- evaluation ----


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 5, True),
        ("ne", 5, False),
        ("lt", 6, True),
        ("le", 5, True),
        ("gt", 5, False),
        ("ge", 5.0, True),
        ("in", [1, 5], True),
        ("not_in", [1, 5], False),
        ("not_in", [1, 2], True),
    ],
)
def test_number_comparisons(op: str, value: Any, expected: bool) -> None:
    assert (
        evaluate(cmp("profile.event_count", op, value), facts({"profile.event_count": 5}))
        is expected
    )


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in"])
def test_a_comparison_with_an_absent_fact_is_false_and_not_inverts_it(op: str) -> None:
    value = [25] if op in LIST_OPERATORS else 25
    condition = cmp("context.market.mortgage_rate_drop_bp", op, value)
    absent = facts({"context.market.mortgage_rate_drop_bp": None})
    assert evaluate(condition, absent) is False
    assert evaluate(condition, Facts(values={})) is False
    assert evaluate(Not(condition), absent) is True


@pytest.mark.parametrize(
    ("op", "value", "uses", "expected"),
    [
        ("in", ["web", "mobile_app"], {"atm", "web"}, True),
        ("in", ["mobile_app"], {"atm", "web"}, False),
        ("not_in", ["mobile_app"], {"atm", "web"}, True),
        ("not_in", ["web"], {"atm", "web"}, False),
        ("in", ["web"], set(), False),
        ("not_in", ["web"], set(), True),
    ],
)
def test_set_fields_match_when_they_share_a_value(
    op: str, value: list[str], uses: set[str], expected: bool
) -> None:
    condition = cmp("profile.uses_channel", op, value)
    assert evaluate(condition, facts({"profile.uses_channel": frozenset(uses)})) is expected


@pytest.mark.parametrize(
    ("field", "op", "value", "fact", "expected"),
    [
        ("context.channel", "eq", "atm", "atm", True),
        ("context.channel", "ne", "atm", "web", True),
        ("context.channel", "in", ["web", "atm"], "atm", True),
        ("context.channel", "not_in", ["web", "atm"], "atm", False),
        ("profile.stated.receipt", "eq", False, False, True),
        ("profile.stated.receipt", "ne", False, True, True),
        ("profile.stated.receipt", "eq", True, False, False),
    ],
)
def test_text_and_flag_comparisons(
    field: str, op: str, value: Any, fact: Any, expected: bool
) -> None:
    assert evaluate(cmp(field, op, value), Facts(values={field: fact})) is expected


YES = HasHabit("top_up")
NO = HasHabit("cash_withdrawal")
WITH_TOP_UP = facts(habits=("top_up",))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (AllOf((YES, YES)), True),
        (AllOf((YES, NO)), False),
        (AllOf((NO, NO)), False),
        (AnyOf((YES, NO)), True),
        (AnyOf((NO, YES)), True),
        (AnyOf((NO, NO)), False),
        (Not(YES), False),
        (Not(NO), True),
        (Not(AllOf((YES, NO))), True),
    ],
)
def test_all_any_not_truth_table(condition: Condition, expected: bool) -> None:
    assert evaluate(condition, WITH_TOP_UP) is expected


@pytest.mark.parametrize(
    ("kind", "open_problems", "expected"),
    [
        ("complaint", ("complaint",), True),
        ("complaint", ("outage",), False),
        ("any", ("low_feedback",), True),
        ("any", (), False),
        ("outage", (), False),
    ],
)
def test_has_open_case(kind: str, open_problems: tuple[str, ...], expected: bool) -> None:
    assert evaluate(HasOpenCase(kind), facts(open_problems=open_problems)) is expected


# ---- properties over generated conditions and facts ----


def _literal(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.type is FactType.NUMBER:
        return st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
    if spec.type is FactType.FLAG:
        return st.booleans()
    if spec.vocabulary is not None:
        return st.sampled_from(sorted(spec.vocabulary))
    return st.sampled_from(["atm-0042", "cash_withdrawal", "top_up", "x"])


@st.composite
def comparisons(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(FIELDS)))
    spec = FIELDS[name]
    op = draw(st.sampled_from(sorted(OPERATORS_BY_TYPE[spec.type])))
    literal = _literal(spec)
    value = draw(st.lists(literal, min_size=1, max_size=4) if op in LIST_OPERATORS else literal)
    return {"field": name, "op": op, "value": value}


_PROBLEMS = ["any", *(kind.value for kind in ProblemKind)]
_REQUESTS = ["cash_withdrawal", "top_up", "bill_enquiry"]
leaves = (
    comparisons()
    | st.sampled_from(_PROBLEMS).map(lambda kind: {"has_open_case": kind})
    | st.sampled_from(_REQUESTS).map(lambda request: {"has_habit": request})
)
condition_data_strategy = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, min_size=1, max_size=3).map(lambda parts: {"all": parts})
        | st.lists(children, min_size=1, max_size=3).map(lambda parts: {"any": parts})
        | children.map(lambda inner: {"not": inner})
    ),
    max_leaves=12,
)
any_fact = (
    st.none()
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.text(max_size=6)
    | st.sampled_from(["atm", "mass", "paperless", "en"])
    | st.frozensets(st.sampled_from(["atm", "web", "traveller", "mortgage", "x"]))
    | st.lists(st.integers(), max_size=2)
)
any_facts = st.builds(
    Facts,
    values=st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, any_fact)),
    open_problems=st.frozensets(st.sampled_from(_PROBLEMS[1:])),
    habits=st.frozensets(st.sampled_from(_REQUESTS)),
)


def _parsed(data: dict[str, Any]) -> Condition:
    try:
        return parse_condition(data)
    except ConditionError:  # only a generated `not` chain deeper than MAX_DEPTH
        reject()


@given(data=condition_data_strategy, facts=any_facts)
@settings(max_examples=400, deadline=None)
def test_evaluate_never_raises_and_answers_a_bool(data: dict[str, Any], facts: Facts) -> None:
    condition = _parsed(data)
    result = evaluate(condition, facts)
    assert result is True or result is False
    assert evaluate(Not(condition), facts) is (not result)


@given(data=condition_data_strategy)
@settings(max_examples=200, deadline=None)
def test_parsing_round_trips(data: dict[str, Any]) -> None:
    condition = _parsed(data)
    assert parse_condition(condition_data(condition)) == condition


@given(data=condition_data_strategy, facts=any_facts)
@settings(max_examples=400, deadline=None)
def test_a_compiled_condition_answers_as_evaluate_does(data: dict[str, Any], facts: Facts) -> None:
    condition = _parsed(data)
    assert compile_condition(condition)(facts) is evaluate(condition, facts)
