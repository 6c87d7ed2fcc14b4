"""How each touchpoint is doing: volume, net promoter score and complaint rate.

Computed from population counters (`touchpoint:<id>` dimensions, see
`engine.channel_preference.population_dimensions`), so it costs nothing on the event path
beyond the counters the stores already keep.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from engine.events import Event, EventType, FeedbackAttributes

TOUCHPOINT_DIMENSION = "touchpoint:"
#: Customer-initiated interactions that count toward a touchpoint's volume.
_INTERACTIONS = frozenset(
    {EventType.REQUEST, EventType.CONTACT, EventType.COMPLAINT_OPENED, EventType.FEEDBACK}
)


def touchpoint_counters(event: Event) -> list[tuple[str, str]]:
    """The (dimension, key) counters an event increments for its touchpoint."""
    if event.type not in _INTERACTIONS:
        return []
    dimension = f"{TOUCHPOINT_DIMENSION}{event.touchpoint}"
    counters = [(dimension, "volume")]
    if event.type is EventType.COMPLAINT_OPENED:
        counters.append((dimension, "complaints"))
    elif event.type is EventType.FEEDBACK:
        feedback = event.typed
        assert isinstance(feedback, FeedbackAttributes)
        # The usual NPS bands on a 0-10 score.
        band = (
            "promoters"
            if feedback.score >= 9
            else ("passives" if feedback.score >= 7 else "detractors")
        )
        counters.append((dimension, band))
    return counters


class TouchpointStats(BaseModel):
    touchpoint: str
    volume: int = Field(description="Requests, contacts, complaints and feedback here.")
    feedback: int = Field(description="Feedback scores given here.")
    nps: float | None = Field(description="% promoters (9-10) - % detractors (0-6); None: none.")
    complaints: int
    complaint_rate: float = Field(description="Complaints per interaction, in [0, 1].")


def touchpoint_report(counts: Mapping[str, Mapping[str, float]]) -> list[TouchpointStats]:
    """Stats per touchpoint, busiest first."""
    report = []
    for dimension, by_key in counts.items():
        if not dimension.startswith(TOUCHPOINT_DIMENSION):
            continue
        promoters, detractors = by_key.get("promoters", 0), by_key.get("detractors", 0)
        scored = int(promoters + detractors + by_key.get("passives", 0))
        volume = int(by_key.get("volume", 0))
        complaints = int(by_key.get("complaints", 0))
        report.append(
            TouchpointStats(
                touchpoint=dimension.removeprefix(TOUCHPOINT_DIMENSION),
                volume=volume,
                feedback=scored,
                nps=100 * (promoters - detractors) / scored if scored else None,
                complaints=complaints,
                complaint_rate=complaints / volume if volume else 0.0,
            )
        )
    return sorted(report, key=lambda stats: (-stats.volume, stats.touchpoint))
