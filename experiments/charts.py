"""Hand-written inline SVG charts for the review report: no script, no font, no external file.

Every function returns one `<svg>` element sized by its `viewBox` (it scales with the page);
text inherits the page's system font stack. Labels are escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

#: Colours of the variants, in order (colour-blind safe: Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
_INK, _MUTED, _GRID = "#1f2328", "#59636e", "#d1d9e0"


@dataclass(frozen=True)
class LiftBar:
    """One treatment's lift: the estimate, the interval that decides, and, when that one is
    always-valid, the narrower fixed-horizon interval drawn inside it."""

    label: str
    estimate: float
    low: float
    high: float
    inner_low: float | None = None
    inner_high: float | None = None
    significant: bool = False


def lift_chart(bars: Sequence[LiftBar], *, unit: Callable[[float], str], title: str) -> str:
    """A forest plot of lifts against a zero line, one row per treatment."""
    width, row, left, right, top = 720, 56, 150, 30, 40
    height = top + row * len(bars) + 44
    values = [0.0, *(v for b in bars for v in (b.low, b.high))]
    low, high = _padded(min(values), max(values))
    plot = width - left - right

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * plot

    parts = [_title(title, width)]
    for tick in _ticks(low, high):
        parts.append(_line(x(tick), top - 6, x(tick), height - 38, _GRID))
        parts.append(_text(x(tick), height - 20, unit(tick), anchor="middle", fill=_MUTED))
    parts.append(_line(x(0.0), top - 10, x(0.0), height - 38, _INK, width=1.5))
    for index, bar in enumerate(bars):
        y = top + row * index + row / 2
        colour = PALETTE[(index + 1) % len(PALETTE)]
        parts.append(_text(left - 12, y + 5, bar.label, anchor="end", fill=_INK))
        parts.append(_line(x(bar.low), y, x(bar.high), y, colour, width=3))
        for end in (bar.low, bar.high):
            parts.append(_line(x(end), y - 8, x(end), y + 8, colour, width=2))
        if bar.inner_low is not None and bar.inner_high is not None:
            parts.append(_line(x(bar.inner_low), y, x(bar.inner_high), y, colour, width=9))
        parts.append(
            f'<circle cx="{x(bar.estimate):.1f}" cy="{y:.1f}" r="7" fill="#fff" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        parts.append(_text(x(bar.estimate), y - 14, unit(bar.estimate), anchor="middle", fill=_INK))
    return _svg(width, height, title, parts)


@dataclass(frozen=True)
class Line:
    """One variant's series: (time, value) points in time order."""

    label: str
    points: Sequence[tuple[datetime, float]]


def series_chart(lines: Sequence[Line], *, unit: Callable[[float], str], title: str) -> str:
    """A line chart of each variant's cumulative metric over time, with a legend."""
    width, height, left, right, top, bottom = 720, 320, 80, 20, 56, 44
    points = [p for line in lines for p in line.points]
    if not points:
        return _svg(width, 80, title, [_title(title, width), _text(20, 60, "No data yet.")])
    times = [p[0].timestamp() for p in points]
    start, end = min(times), max(times)
    if end == start:
        end = start + 1.0
    low, high = _padded(min(0.0, *(p[1] for p in points)), max(p[1] for p in points))
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(when: datetime) -> float:
        return left + (when.timestamp() - start) / (end - start) * plot_w

    def y(value: float) -> float:
        return top + plot_h - (value - low) / (high - low) * plot_h

    parts = [_title(title, width)]
    for tick in _ticks(low, high):
        parts.append(_line(left, y(tick), width - right, y(tick), _GRID))
        parts.append(_text(left - 8, y(tick) + 4, unit(tick), anchor="end", fill=_MUTED))
    first, last = min(p[0] for p in points), max(p[0] for p in points)
    for when, anchor in ((first, "start"), (last, "end")):
        label = when.strftime("%Y-%m-%d %H:%M")
        parts.append(_text(x(when), height - 16, label, anchor=anchor, fill=_MUTED))
    for index, line in enumerate(lines):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line.points)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5" '
            'stroke-linejoin="round"/>'
        )
        legend_x = left + index * 160
        parts.append(_line(legend_x, 40, legend_x + 22, 40, colour, width=3))
        parts.append(_text(legend_x + 28, 44, line.label, fill=_INK))
    return _svg(width, height, title, parts)


def _svg(width: int, height: float, title: str, parts: list[str]) -> str:
    body = "".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height:.0f}" '
        f'role="img" aria-label="{escape(title)}" font-size="13">{body}</svg>'
    )


def _title(title: str, width: int) -> str:
    return _text(width / 2, 18, title, anchor="middle", fill=_INK, weight="600")


def _line(x1: float, y1: float, x2: float, y2: float, colour: str, *, width: float = 1) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{colour}" stroke-width="{width}"/>'
    )


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    fill: str = _INK,
    weight: str = "400",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" '
        f'font-weight="{weight}">{escape(text)}</text>'
    )


def _padded(low: float, high: float) -> tuple[float, float]:
    """The range with 8 % room on each side (and some width when it has none)."""
    if high == low:
        spread = abs(high) or 1.0
        return low - spread * 0.5, high + spread * 0.5
    room = (high - low) * 0.08
    return low - room, high + room


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values within [low, high]."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks
