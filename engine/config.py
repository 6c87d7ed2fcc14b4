"""Tunable parameters of the fold and of the defaults, in one validated place."""

from pydantic import BaseModel, ConfigDict, Field

from engine.preferences import ConsentStatus, Purpose


class EngineConfig(BaseModel):
    """Parameters of learning. Changing a fold parameter (half-life, capacities) needs a replay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel_half_life_days: float = Field(
        90.0, gt=0, description="Half-life of implicit channel counts, in days."
    )
    prior_strength: float = Field(
        2.0,
        ge=0,
        description="Pseudo-count of the population prior in the empirical-Bayes shrinkage.",
    )
    habit_window: int = Field(10, ge=1, le=50, description="Recent requests kept per habit key.")
    habit_min_count: int = Field(
        3, ge=1, description="Matching recent requests needed before a default is offered."
    )
    habit_min_share: float = Field(
        0.6, gt=0, le=1, description="Share of recent requests that must match, in [0, 1]."
    )
    default_max_declines: int = Field(
        3, ge=1, description="Declines since the last acceptance after which a default stops."
    )
    seen_capacity: int = Field(
        128,
        ge=1,
        description="Event ids remembered for idempotence; older events are 'too late'.",
    )
    max_habit_keys: int = Field(24, ge=1, description="Request kind x channel pairs tracked.")
    max_request_kinds: int = Field(16, ge=1, description="Request kinds with channel counts.")
    feedback_capacity: int = Field(20, ge=1, description="Recent feedback scores kept.")
    resolved_cases_kept: int = Field(10, ge=0, description="Resolved cases kept for context.")
    default_consent: dict[Purpose, ConsentStatus] = Field(
        default_factory=lambda: {
            Purpose.SERVICE: ConsentStatus.GRANTED,
            Purpose.PROFILING: ConsentStatus.GRANTED,
            Purpose.MARKETING: ConsentStatus.DENIED,
        },
        description="Consent in force where the customer stated none, by purpose.",
    )
    low_feedback_max_score: int = Field(
        4, ge=0, le=10, description="A latest feedback score (0-10) at or below this ..."
    )
    low_feedback_days: int = Field(
        30, ge=1, description="... is an open problem for this many days (service first)."
    )
    exposures_kept: int = Field(
        60, ge=1, description="Delivered actions kept: enough for the longest cap window."
    )
    action_declines_kept: int = Field(8, ge=1, description="Declines kept per action.")
    max_actions_tracked: int = Field(40, ge=1, description="Actions with feedback kept.")
    min_default_acceptance: float = Field(
        0.5,
        ge=0,
        le=1,
        description="With a trained default-acceptance model: the least probability of "
        "acceptance at which a habit is offered as a default.",
    )
    signatures_per_habit: int = Field(6, ge=1, description="Default outcomes kept per habit key.")
    habit_amount_tolerance: float = Field(
        0.10,
        ge=0,
        lt=1,
        description="Amounts within this relative distance of each other form one approximate "
        "habit (other values must match exactly) ...",
    )
    habit_amount_floor: float = Field(
        2.0, ge=0, description="... or within this absolute distance, whichever is larger."
    )
    habit_amount_floors: dict[str, float] = Field(
        default_factory=lambda: {"JPY": 300.0},
        description="The absolute floor by currency, where it differs from habit_amount_floor.",
    )
    habit_rhythm: bool = Field(True, description="Detect monthly and weekly rhythms of habits.")
    rhythm_min_count: int = Field(
        4, ge=2, description="Matching requests needed before a rhythm is claimed."
    )
    rhythm_tolerance_days: int = Field(
        3, ge=0, le=7, description="A monthly habit is due this many days either side of its day."
    )

    def amount_floor(self, currency: str | None) -> float:
        return self.habit_amount_floors.get(currency or "", self.habit_amount_floor)
