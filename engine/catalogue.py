"""The action catalogue: what Rapport may propose, on which channels, to whom and how often.

A catalogue is YAML read with `yaml.safe_load` (plain data only: a `!!python/...` tag is an
error, never a constructor) and validated by pydantic models that reject unknown keys. Each
action's eligibility is a condition of engine/conditions.py, parsed and checked against the field
registry when the catalogue loads. Texts shown to customers are plain text from a strict
character set, so a template or code fragment (`${...}`, `{{ }}`, `__import__`, `os.system`) is
refused. Nothing in a catalogue is ever evaluated as code.

Every error is a `CatalogueError` naming the offending key by a dotted path, such as
`actions[3].eligibility.all[1].field`.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from importlib.resources import files
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from engine.conditions import (
    Condition,
    ConditionError,
    condition_data,
    evaluate,
    join,
    key_name,
    parse_condition,
)
from engine.errors import EngineError
from engine.events import Channel, ProblemKind
from engine.facts import Facts
from engine.preferences import Purpose

#: The example catalogue of a retail bank, shipped as package data.
RETAIL_BANK_CATALOGUE: Traversable = files("engine.catalogues").joinpath("retail_bank.yaml")
MAX_CATALOGUE_CHARS = 1_000_000


class CatalogueError(EngineError):
    """A catalogue failed to load. `path` is dotted (`actions[3].id`); '' is the whole file.

    `problems` holds every (path, reason) found; the message names the first.
    """

    def __init__(self, path: str, reason: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.path, self.reason = path, reason
        self.problems = problems or ((path, reason),)
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{path}: {reason}{more}" if path else f"{reason}{more}")


def _located(subpath: str, reason: str) -> PydanticCustomError:
    """An error at `subpath` below the location pydantic reports."""
    return PydanticCustomError("catalogue", "{reason}", {"subpath": subpath, "reason": reason})


# ---- plain values: names and customer-readable texts ----

_NAME = re.compile(r"^(?!.*__)[a-z][a-z0-9_]{0,63}$")
_VERSION = re.compile(r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_TEXT_CHARS = re.compile(r"^[A-Za-zÀ-ÖØ-öø-ÿ0-9 .,;:!?'\"()\-/%€+&]+$")
_TEXT_RULES = (
    (re.compile(r"[A-Za-z_]\.[A-Za-z_]"), "must not contain a dotted name such as a.b"),
    (re.compile(r"[A-Za-z0-9]\("), "must not contain call syntax: a word directly before '('"),
    (re.compile(r"(?<![0-9])%"), "may use % only directly after a number, as in 3%"),
    (
        re.compile(r"\b(lambda|import|eval|exec|getattr|setattr|globals|subprocess)\b", re.I),
        "must not contain a code keyword",
    ),
)


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise PydanticCustomError("name", "must be a name of a-z, 0-9 and single '_'")
    return value


def _version(value: str) -> str:
    if not _VERSION.match(value):
        raise PydanticCustomError("version", "must be a name of letters, digits, '_' and '-'")
    return value


def check_plain_text(value: str) -> str:
    """Return `value` if it is plain customer text; raise a pydantic error saying why if not."""
    if not _TEXT_CHARS.match(value):
        allowed = "letters, digits, spaces and . , ; : ! ? ' \" ( ) - / % € + &"
        raise PydanticCustomError("plain_text", "may only hold {allowed}", {"allowed": allowed})
    for pattern, reason in _TEXT_RULES:
        if pattern.search(value):
            raise PydanticCustomError("plain_text", reason)
    return value


def _iso_day(value: object) -> object:
    """Dates come as YAML dates or as ISO `YYYY-MM-DD` text; a number is not a date here."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


Name = Annotated[StrictStr, AfterValidator(_name)]
Day = Annotated[date, Strict(), BeforeValidator(_iso_day)]
Title = Annotated[StrictStr, Field(min_length=1, max_length=80), AfterValidator(check_plain_text)]
Body = Annotated[StrictStr, Field(min_length=1, max_length=300), AfterValidator(check_plain_text)]
Money = Annotated[float, Strict(), Field(ge=0, le=1_000_000, allow_inf_nan=False)]
Weight = Annotated[float, Strict(), Field(gt=0, le=100, allow_inf_nan=False)]


def _parse_eligibility(data: object) -> Condition:
    try:
        return parse_condition(data)
    except ConditionError as exc:
        raise _located(exc.path, exc.reason) from None


Eligibility = Annotated[
    Condition, PlainValidator(_parse_eligibility), PlainSerializer(condition_data)
]


# ---- the models ----


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionKind(StrEnum):
    SERVICE = "service"
    SALES = "sales"
    RETENTION = "retention"
    INFORMATION = "information"


#: The consent purpose each kind of action may be delivered under.
PURPOSES_BY_KIND: dict[ActionKind, frozenset[Purpose]] = {
    ActionKind.SERVICE: frozenset({Purpose.SERVICE}),
    ActionKind.SALES: frozenset({Purpose.MARKETING}),
    ActionKind.RETENTION: frozenset({Purpose.MARKETING}),
    ActionKind.INFORMATION: frozenset({Purpose.SERVICE, Purpose.MARKETING}),
}


class Localised(_Strict):
    en: Title
    it: Title


class LocalisedBody(_Strict):
    en: Body
    it: Body


class Cap(_Strict):
    """At most `count` offers of the action to one customer in any `days`-day window."""

    count: StrictInt = Field(ge=1, le=100)
    days: StrictInt = Field(ge=1, le=366)


class Validity(_Strict):
    """Inclusive dates between which the action may be offered; None: unbounded."""

    valid_from: Day | None = None
    valid_until: Day | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Validity:
        if self.valid_from and self.valid_until and self.valid_from > self.valid_until:
            raise _located("valid_until", "must not be before valid_from")
        return self

    def covers(self, day: date) -> bool:
        after_start = self.valid_from is None or self.valid_from <= day
        return after_start and (self.valid_until is None or day <= self.valid_until)


class Action(_Strict):
    """Something Rapport may propose. `value` is the expected business value in EUR; `weight`
    is the business lever arbitration multiplies it by."""

    id: Name
    kind: ActionKind
    purpose: Purpose = Field(description="Consent purpose: service, or marketing for sales.")
    channels: list[Channel] = Field(min_length=1, max_length=len(Channel))
    value: Money
    weight: Weight = 1.0
    validity: Validity = Validity()
    cooldown_days: StrictInt = Field(0, ge=0, le=366, description="Days between two offers.")
    caps: list[Cap] = Field(default_factory=list, max_length=4)
    addresses: list[ProblemKind] = Field(
        default_factory=list,
        max_length=len(ProblemKind),
        description="Open problems it helps with.",
    )
    eligibility: Eligibility | None = Field(None, description="None: every customer.")
    title: Localised
    message: LocalisedBody

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.purpose not in PURPOSES_BY_KIND[self.kind]:
            allowed = ", ".join(sorted(PURPOSES_BY_KIND[self.kind]))
            raise _located("purpose", f"a {self.kind} action must have purpose {allowed}")
        for name, items in (("channels", self.channels), ("addresses", self.addresses)):
            if len(set(items)) != len(items):
                raise _located(name, "must not repeat a value")
        if len({cap.days for cap in self.caps}) != len(self.caps):
            raise _located("caps", "must not have two caps over the same number of days")
        if self.addresses and self.kind is not ActionKind.SERVICE:
            raise _located("addresses", "only service actions address open problems")
        return self

    def is_valid_on(self, day: date) -> bool:
        return self.validity.covers(day)

    def is_eligible(self, facts: Facts) -> bool:
        return self.eligibility is None or evaluate(self.eligibility, facts)


class Catalogue(_Strict):
    """The actions Rapport may propose; `version` is logged with every decision."""

    version: Annotated[StrictStr, AfterValidator(_version)]
    actions: list[Action] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalogue:
        seen: set[str] = set()
        for index, action in enumerate(self.actions):
            if action.id in seen:
                raise _located(f"actions[{index}].id", f"repeats the id {action.id}")
            seen.add(action.id)
        return self

    def action(self, action_id: str) -> Action | None:
        return next((action for action in self.actions if action.id == action_id), None)


# ---- loading ----


def load_catalogue_text(text: str) -> Catalogue:
    """Parse and validate a catalogue given as YAML text; raise CatalogueError if it is bad."""
    if len(text) > MAX_CATALOGUE_CHARS:
        raise CatalogueError("", f"is longer than {MAX_CATALOGUE_CHARS} characters")
    data = _plain_data(text)
    if not isinstance(data, dict):
        raise CatalogueError("", "must be a mapping with the keys version and actions")
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        problems = tuple(_problem(error) for error in exc.errors(include_url=False))
        raise CatalogueError(*problems[0], problems=problems) from None


def load_catalogue(path: str | PathLike[str] | Traversable) -> Catalogue:
    """Read a catalogue file (UTF-8 YAML). The one function of the engine that reads a file."""
    source = Path(path) if isinstance(path, str | PathLike) else path
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise CatalogueError("", f"cannot be read: {exc}") from None
    return load_catalogue_text(text)


def _plain_data(text: str) -> Any:
    try:
        data = yaml.safe_load(text)
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CatalogueError("", f"is not plain YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise CatalogueError("", f"is not plain YAML: {exc}") from None
    except RecursionError:
        raise CatalogueError("", "is nested too deeply") from None
    return data


def _refuse_duplicate_keys(root: yaml.Node | None) -> None:
    """PyYAML keeps the last of two equal keys; a catalogue must not hide one that way."""
    pending, seen = [root] if root is not None else [], set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in keys:
                        line = key.start_mark.line + 1
                        raise CatalogueError(
                            "", f"repeats the key {key_name(key.value)} on line {line}"
                        )
                    keys.add(key.value)
                pending.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)


def _problem(error: ErrorDetails) -> tuple[str, str]:
    path = ""
    for part in error["loc"]:
        path = join(path, f"[{part}]" if isinstance(part, int) else key_name(part))
    context = error.get("ctx") or {}
    path = join(path, str(context.get("subpath", "")))
    reasons = {"extra_forbidden": "is not an allowed key", "missing": "is required"}
    return path, reasons.get(error["type"], error["msg"])
