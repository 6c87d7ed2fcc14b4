"""Eligibility conditions: a small, closed, declarative language over profile and context facts.

A condition is plain data (it comes from the action catalogue's YAML) parsed into frozen nodes:

    {field: profile.event_count, op: ge, value: 5}      a comparison of a fact with a literal
    {all: [<condition>, ...]}  {any: [<condition>, ...]}  {not: <condition>}
    {has_open_case: complaint}    an open problem: complaint, failed_payment, outage,
                                  low_feedback, or any of them
    {has_habit: cash_withdrawal}  an offered usual request of that kind, at any channel
    {habit_due: bill_payment}     a usual request of that kind whose rhythm says it is due now,
                                  at the decision's kind of touchpoint

Fields form a closed registry, `FIELDS` (engine/facts.py builds the facts): each name has a type,
and the type decides which operators and literals are allowed. Parsing checks the field, the
operator and the literal, so a catalogue naming an unknown field or operator, or comparing with
a literal of the wrong type, is refused when it loads. Nothing is evaluated as code: evaluation
looks facts up by registered name in a mapping computed once per decision by `facts_for`.

Semantics: a comparison with an absent fact (a preference never stated, a market figure the
touchpoint did not send) is false whatever the operator; `not` inverts it. On a set-valued field
(`profile.uses_channel`), `in` is true when the set shares a value with the list and `not_in`
when it shares none.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError
from engine.events import ProblemKind
from engine.facts import ANY_PROBLEM, FIELDS, Facts, FactType, FieldSpec

Scalar = int | float | str | bool
LiteralValue = Scalar | tuple[Scalar, ...]

#: Every operator of the language, and the ones that take a list of values.
OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in")
LIST_OPERATORS = frozenset({"in", "not_in"})
OPERATORS_BY_TYPE: Mapping[FactType, frozenset[str]] = {
    FactType.NUMBER: frozenset(OPERATORS),
    FactType.TEXT: frozenset({"eq", "ne", "in", "not_in"}),
    FactType.FLAG: frozenset({"eq", "ne"}),
    FactType.TEXT_SET: LIST_OPERATORS,
}
_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}

#: Limits that keep a condition small: nesting depth, nodes, values of one `in` list.
MAX_DEPTH = 8
MAX_NODES = 128
MAX_LIST = 32
#: A free text literal (touchpoint, request kind): a token, never code or a template.
TOKEN = re.compile(r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
REQUEST_KIND = re.compile(r"^(?!.*__)[a-z][a-z0-9_]{0,47}$")


class ConditionError(EngineError):
    """A condition is malformed; `path` locates the culprit, e.g. `all[1].field`."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


# ---- the parsed nodes; a Compare is valid by construction ----


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: str
    value: LiteralValue

    def __post_init__(self) -> None:
        check_comparison(self.field, self.op, self.value)


@dataclass(frozen=True, slots=True)
class AllOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    condition: Condition


@dataclass(frozen=True, slots=True)
class HasOpenCase:
    kind: str = ANY_PROBLEM


@dataclass(frozen=True, slots=True)
class HasHabit:
    request: str


@dataclass(frozen=True, slots=True)
class HabitDue:
    request: str


Condition = Compare | AllOf | AnyOf | Not | HasOpenCase | HasHabit | HabitDue


def check_comparison(field: object, op: object, value: object) -> None:
    """Raise ConditionError unless `op` applies to the registered `field` and `value` fits it."""
    spec = FIELDS.get(field) if isinstance(field, str) else None
    if spec is None:
        raise ConditionError("field", _unknown_field(field))
    if op not in OPERATORS:
        raise ConditionError("op", f"is not a known operator (known: {', '.join(OPERATORS)})")
    allowed = OPERATORS_BY_TYPE[spec.type]
    if op not in allowed:
        known = ", ".join(o for o in OPERATORS if o in allowed)
        raise ConditionError("op", f"{op} does not apply to {field} (allowed: {known})")
    if op not in LIST_OPERATORS:
        if isinstance(value, tuple | list):
            raise ConditionError("value", f"{op} takes one value, not a list")
        _check_literal(spec, value, "value")
        return
    if not isinstance(value, tuple) or not value or len(value) > MAX_LIST:
        raise ConditionError("value", f"{op} takes a list of 1 to {MAX_LIST} values")
    for index, item in enumerate(value):
        _check_literal(spec, item, f"value[{index}]")


def _unknown_field(field: object) -> str:
    if not isinstance(field, str):
        return "must be a field name"
    close = difflib.get_close_matches(field, list(FIELDS), n=1)
    return "is not a known field" + (f" (did you mean {close[0]}?)" if close else "")


def _check_literal(spec: FieldSpec, value: object, path: str) -> None:
    if spec.type is FactType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConditionError(path, "must be a number")
        if not math.isfinite(value):
            raise ConditionError(path, "must be a finite number")
    elif spec.type is FactType.FLAG:
        if not isinstance(value, bool):
            raise ConditionError(path, "must be true or false")
    elif not isinstance(value, str):
        raise ConditionError(path, "must be a text value")
    elif spec.vocabulary is not None and value not in spec.vocabulary:
        raise ConditionError(path, f"must be one of {', '.join(sorted(spec.vocabulary))}")
    elif not TOKEN.match(value):
        raise ConditionError(path, "must be a name of letters, digits, '_' or '-'")


# ---- parsing plain data into nodes ----

_COMPARISON_KEYS = ("field", "op", "value")
_NODE_KEYS = ("all", "any", "not", "has_open_case", "has_habit", "habit_due")


def parse_condition(data: object) -> Condition:
    """Parse and check a condition given as plain data; raise ConditionError with a path."""
    return _Parser().parse(data, "", 1)


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def parse(self, data: object, path: str, depth: int) -> Condition:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise ConditionError(path, f"is too deep or too large ({MAX_DEPTH}, {MAX_NODES})")
        if not isinstance(data, dict):
            raise ConditionError(path, "must be a mapping: {field, op, value} or " + _NODES)
        if any(key in data for key in _COMPARISON_KEYS):
            return _comparison(data, path)
        if len(data) != 1:
            raise ConditionError(path, "must have exactly one of " + _NODES)
        [(key, body)] = data.items()
        if key in ("all", "any"):
            return self._group(key, body, join(path, key), depth)
        if key == "not":
            return Not(self.parse(body, join(path, "not"), depth + 1))
        if key == "has_open_case":
            return _has_open_case(body, join(path, key))
        if key == "has_habit":
            return _has_habit(body, join(path, key))
        if key == "habit_due":
            return HabitDue(_has_habit(body, join(path, key)).request)
        raise ConditionError(join(path, key_name(key)), "is not a known condition: " + _NODES)

    def _group(self, key: str, body: object, path: str, depth: int) -> Condition:
        if not isinstance(body, list) or not body or len(body) > MAX_LIST:
            raise ConditionError(path, f"must be a list of 1 to {MAX_LIST} conditions")
        parts = tuple(
            self.parse(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(body)
        )
        return AllOf(parts) if key == "all" else AnyOf(parts)


_NODES = ", ".join(_NODE_KEYS)


def _comparison(data: dict[Any, Any], path: str) -> Compare:
    for key in data:
        if key not in _COMPARISON_KEYS:
            raise ConditionError(join(path, key_name(key)), "is not a key of a comparison")
    for key in _COMPARISON_KEYS:
        if key not in data:
            raise ConditionError(join(path, key), "is required in a comparison")
    value = data["value"]
    try:
        return Compare(
            data["field"], data["op"], tuple(value) if isinstance(value, list) else value
        )
    except ConditionError as exc:
        raise ConditionError(join(path, exc.path), exc.reason) from None


def _has_open_case(body: object, path: str) -> HasOpenCase:
    kinds = [ANY_PROBLEM, *(kind.value for kind in ProblemKind)]
    if body not in kinds:
        raise ConditionError(path, f"must be one of {', '.join(kinds)}")
    assert isinstance(body, str)
    return HasOpenCase(body)


def _has_habit(body: object, path: str) -> HasHabit:
    if not isinstance(body, str) or not REQUEST_KIND.match(body):
        raise ConditionError(path, "must be a request kind, e.g. cash_withdrawal")
    return HasHabit(body)


def join(path: str, part: str) -> str:
    """`actions[3]` + `eligibility` -> `actions[3].eligibility`; an index joins without a dot."""
    if not path or not part:
        return path or part
    return path + part if part.startswith("[") else f"{path}.{part}"


def key_name(key: object) -> str:
    """A key as it may appear in an error path: unsafe characters become '?' (never echoed)."""
    text = key if isinstance(key, str) else type(key).__name__
    return re.sub(r"[^A-Za-z0-9_\-]", "?", text)[:48] or "?"


# ---- evaluation and serialisation ----


def evaluate(condition: Condition, facts: Facts) -> bool:
    """Whether `facts` satisfy `condition`. Never raises for a parsed condition."""
    match condition:
        case Compare(field, op, value):
            return _holds(facts.values.get(field), op, value)
        case AllOf(conditions):
            return all(evaluate(part, facts) for part in conditions)
        case AnyOf(conditions):
            return any(evaluate(part, facts) for part in conditions)
        case Not(inner):
            return not evaluate(inner, facts)
        case HasOpenCase(kind):
            return bool(facts.open_problems) if kind == ANY_PROBLEM else kind in facts.open_problems
        case HasHabit(request):
            return request in facts.habits
        case HabitDue(request):
            return request in facts.due_habits


def _holds(fact: object, op: str, value: LiteralValue) -> bool:
    if fact is None:
        return False
    values = value if isinstance(value, tuple) else (value,)
    try:
        if op in LIST_OPERATORS:
            found = not fact.isdisjoint(values) if isinstance(fact, frozenset) else fact in values
            return found if op == "in" else not found
        return bool(_COMPARE[op](fact, value))
    except TypeError:  # only for facts of a type the field never produces: no match
        return False


def condition_data(condition: Condition) -> dict[str, Any]:
    """The condition as plain data: `parse_condition(condition_data(c)) == c`."""
    match condition:
        case Compare(field, op, value):
            literal = list(value) if isinstance(value, tuple) else value
            return {"field": field, "op": op, "value": literal}
        case AllOf(conditions):
            return {"all": [condition_data(part) for part in conditions]}
        case AnyOf(conditions):
            return {"any": [condition_data(part) for part in conditions]}
        case Not(inner):
            return {"not": condition_data(inner)}
        case HasOpenCase(kind):
            return {"has_open_case": kind}
        case HasHabit(request):
            return {"has_habit": request}
        case HabitDue(request):
            return {"habit_due": request}


# ---- compilation: a condition as a closure, prepared once per catalogue ----

#: A compiled condition: whether the facts satisfy it (never raises).
Predicate = Callable[[Facts], bool]


def compile_condition(condition: Condition) -> Predicate:
    """`condition` as a closure with the same answers as `evaluate`, its operator and literal
    looked up once instead of on every evaluation."""
    match condition:
        case Compare(field, op, value):
            return _compiled_comparison(field, op, value)
        case AllOf(conditions):
            return _all_of(tuple(compile_condition(part) for part in conditions))
        case AnyOf(conditions):
            return _any_of(tuple(compile_condition(part) for part in conditions))
        case Not(inner):
            compiled = compile_condition(inner)
            return lambda facts: not compiled(facts)
        case HasOpenCase(kind):
            if kind == ANY_PROBLEM:
                return lambda facts: bool(facts.open_problems)
            return lambda facts: kind in facts.open_problems
        case HasHabit(request):
            return lambda facts: request in facts.habits
        case HabitDue(request):
            return lambda facts: request in facts.due_habits
    raise TypeError(f"not a condition: {condition!r}")


def _all_of(parts: tuple[Predicate, ...]) -> Predicate:
    def all_hold(facts: Facts) -> bool:
        # A loop: all() over a generator cost more than the parts themselves.
        for part in parts:  # noqa: SIM110
            if not part(facts):
                return False
        return True

    return all_hold


def _any_of(parts: tuple[Predicate, ...]) -> Predicate:
    def any_holds(facts: Facts) -> bool:
        for part in parts:  # noqa: SIM110 - as in _all_of
            if part(facts):
                return True
        return False

    return any_holds


def _compiled_comparison(field: str, op: str, value: LiteralValue) -> Predicate:
    if op in LIST_OPERATORS:
        values = value if isinstance(value, tuple) else (value,)
        wanted = op == "in"

        def listed(facts: Facts) -> bool:
            fact = facts.values.get(field)
            if fact is None:
                return False
            try:
                found = (
                    not fact.isdisjoint(values) if isinstance(fact, frozenset) else fact in values
                )
            except TypeError:
                return False
            return found if wanted else not found

        return listed
    compare = _COMPARE[op]

    def compared(facts: Facts) -> bool:
        fact = facts.values.get(field)
        if fact is None:
            return False
        try:
            return bool(compare(fact, value))
        except TypeError:  # only for facts of a type the field never produces: no match
            return False

    return compared
