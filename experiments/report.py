"""The review report as one self-contained HTML page: `render_report(review) -> str`.

Self-contained: inline CSS with the system font stacks, inline SVG charts
(`experiments.charts`), no script, no font, no image file. Its Content-Security-Policy allows
nothing else, so a page that tried to load anything would say so in the browser's console.
Sections: the verdict, the summary table with intervals, the lift with its interval, the
metric over time per variant, the sample-ratio check, the guardrails and the off-policy
estimate where available.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape

from experiments.analysis import Comparison
from experiments.charts import PALETTE, LiftBar, Line, lift_chart, series_chart
from experiments.review import ExperimentReview, GuardrailRow, VariantSummaryRow
from experiments.verdict import format_chance, format_guardrail, format_lift, format_metric

#: The page's policy: inline styles and data: images only; no script, font or request.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: #1f2328; background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; border-bottom: 1px solid #d1d9e0; padding-bottom: 4px; }
p.meta { color: #59636e; margin: 2px 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.num { font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
.verdict { border-radius: 8px; padding: 14px 18px; margin: 20px 0 8px; border: 2px solid; }
.verdict h2 { border: none; margin: 0 0 6px; padding: 0; font-size: 20px; }
.verdict ul { margin: 6px 0 0; padding-left: 20px; }
.ship { background: #e6f4ea; border-color: #1a7f37; }
.dont-ship { background: #fdecea; border-color: #cf222e; }
.keep-running { background: #fff8e1; border-color: #bf8700; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #d1d9e0;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; }
td.num, .variant { white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 9px; font-size: 13px;
  font-weight: 600; }
.pass, .ok { background: #dafbe1; color: #1a7f37; }
.fail, .mismatch { background: #ffebe9; color: #cf222e; }
.inconclusive, .na { background: #fff8c5; color: #7d4e00; }
.chart { margin: 10px 0; }
.chart svg { width: 100%; height: auto; }
.note { color: #59636e; font-size: 13px; }
"""


def render_report(review: ExperimentReview) -> str:
    """The report page of `review` (UTF-8 HTML text)."""
    experiment = review.experiment
    sections = [
        _header(review),
        _verdict(review),
        _section("Summary", _summary_table(review)),
        _section("Lift against the control", _lift(review)),
        _section(f"{_metric_name(review)} over time", _series(review)),
        _section("Traffic split (sample-ratio check)", _sample_ratio(review)),
        _section("Guardrails", _guardrails(review)),
        _section("Off-policy estimate", _offpolicy(review)),
        _footer(review),
    ]
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Experiment {escape(experiment.id)}: review</title>"
        f"<style>{_STYLE}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )


def _header(review: ExperimentReview) -> str:
    experiment = review.experiment
    stop = _when(experiment.stop) if experiment.stop else "open-ended"
    inference = "always-valid (sequential)" if experiment.sequential else "fixed-horizon"
    return (
        f"<h1>Experiment <code>{escape(experiment.id)}</code></h1>"
        f'<p class="meta">{escape(experiment.hypothesis)}</p>'
        f'<p class="meta">Status: <strong id="status">{review.status}</strong> · '
        f"{_when(experiment.start)} to {stop} · as of {_when(review.as_of)} · "
        f"primary metric: {_metric_name(review).lower()} · {inference} inference at "
        f"alpha = {experiment.alpha:g}</p>"
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _verdict(review: ExperimentReview) -> str:
    verdict = review.verdict
    css = verdict.decision.replace("'", "").replace(" ", "-")
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in verdict.reasons)
    return (
        f'<section class="verdict {css}" id="verdict" data-decision="{escape(verdict.decision)}">'
        f"<h2>Verdict: {escape(verdict.decision)}</h2>"
        f"<p><strong>{escape(verdict.headline)}</strong></p><ul>{reasons}</ul></section>"
    )


def _summary_table(review: ExperimentReview) -> str:
    comparisons = {c.treatment: c for c in (review.analysis.comparisons if review.analysis else [])}
    head = _row(
        [
            "variant",
            "configuration",
            "units",
            "exposures",
            "conversions",
            f"{_metric_name(review).lower()} [{_level(review)} interval]",
            "lift vs control [interval]",
            "p-value",
            "chance to beat control",
        ],
        header=True,
        numeric=range(2, 9),
    )
    rows = [
        _variant_row(review, index, row, comparisons.get(row.variant))
        for index, row in enumerate(review.variants)
    ]
    cuped = review.analysis.cuped if review.analysis else None
    notes = []
    if cuped is not None:
        notes.append(
            f"CUPED with the {review.experiment.covariate_days}-day pre-period metric: "
            f"variance reduced by {cuped.variance_reduction:.1%} (θ = {cuped.theta:.3g})."
        )
    if review.analysis_note:
        notes.append(review.analysis_note)
    if review.crossovers:
        notes.append(
            f"{review.crossovers:,} customers were exposed under a second variant after a "
            "weight change; they count in their first variant only."
        )
    return _table(head, rows) + "".join(f'<p class="note">{escape(n)}</p>' for n in notes)


def _variant_row(
    review: ExperimentReview, index: int, row: VariantSummaryRow, comparison: Comparison | None
) -> str:
    experiment = review.experiment
    variant = experiment.variant(row.variant)
    configuration = [
        f"weight {row.weight:g}",
        "personalised" if row.personalisation else "holdout: personalisation off",
    ]
    if row.personalisation:
        configuration.append(f"model {row.model_alias}")
    if variant.exploration_epsilon is not None:
        configuration.append(f"ε = {variant.exploration_epsilon:g}")
    if variant.actions is not None:
        configuration.append(f"{len(variant.actions)} actions")
    metric = escape(format_metric(experiment, row.mean))
    if row.ci_low is not None and row.ci_high is not None:
        metric += _below(
            f"[{format_metric(experiment, row.ci_low)}, {format_metric(experiment, row.ci_high)}]"
        )
    lift = p_value = chance = "control" if row.variant == review.control else "n/a"
    if comparison is not None:
        estimate, low, high = _decisive(comparison)
        lift = escape(format_lift(experiment, estimate)) + _below(
            f"[{format_lift(experiment, low)}, {format_lift(experiment, high)}]"
        )
        decisive_p = comparison.always_valid.p_value if comparison.always_valid else None
        p_value = f"{decisive_p if decisive_p is not None else comparison.p_value:.3g}"
        chance = format_chance(comparison.chance_to_beat_control)
    swatch = f'<span class="swatch" style="background:{PALETTE[index % len(PALETTE)]}"></span>'
    name = f'<span class="variant">{swatch}<strong>{escape(row.variant)}</strong></span>'
    described = [row.description] if row.description else []
    settings = (
        f'<span class="note">{escape("; ".join([*described, ", ".join(configuration)]))}</span>'
    )
    counts = [f"{row.units:,}", f"{row.exposures:,}", f"{row.conversions:,}"]
    cells = [name, settings, *counts, metric, lift, escape(p_value), escape(chance)]
    return _row(cells, numeric=range(2, 9), escaped=True, key=row.variant)


def _below(text: str) -> str:
    """A second, smaller line in a cell (an interval under its estimate)."""
    return f'<br><span class="note">{escape(text)}</span>'


def _lift(review: ExperimentReview) -> str:
    if review.analysis is None:
        return f'<p class="note">{escape(review.analysis_note or "No analysis yet.")}</p>'
    bars = []
    for comparison in review.analysis.comparisons:
        estimate, low, high = _decisive(comparison)
        inner = comparison.absolute_lift if comparison.always_valid is not None else None
        bars.append(
            LiftBar(
                label=comparison.treatment,
                estimate=estimate,
                low=low,
                high=high,
                inner_low=inner.ci_low if inner else None,
                inner_high=inner.ci_high if inner else None,
                significant=comparison.significant,
            )
        )
    experiment = review.experiment
    kind = "always-valid" if review.analysis.sequential else "fixed-horizon"
    title = f"{_metric_name(review)}: lift against {review.control} ({_level(review)} {kind})"
    chart = lift_chart(bars, unit=lambda v: format_lift(experiment, v), title=title)
    note = (
        "The line is the always-valid interval (safe to look at any time); the thick inner "
        "bar is the fixed-horizon interval, valid for one look at a planned size."
        if review.analysis.sequential
        else "The line is the fixed-horizon interval."
    )
    return f'<div class="chart" id="lift-chart">{chart}</div><p class="note">{note}</p>'


def _series(review: ExperimentReview) -> str:
    experiment = review.experiment
    lines = [Line(s.variant, [(p.at, p.value) for p in s.points]) for s in review.series]
    title = f"Cumulative {_metric_name(review).lower()} per customer exposed so far"
    chart = series_chart(lines, unit=lambda v: format_metric(experiment, v), title=title)
    return f'<div class="chart" id="series-chart">{chart}</div>'


def _sample_ratio(review: ExperimentReview) -> str:
    check = review.sample_ratio
    if check is None:
        return '<p><span class="badge na">n/a</span> No customer exposed yet.</p>'
    total = sum(check.observed_units.values())
    badge = (
        '<span class="badge mismatch" id="srm-status">mismatch</span>'
        if check.mismatch
        else '<span class="badge ok" id="srm-status">ok</span>'
    )
    rows = [
        _row(
            [name, f"{n:,}", f"{n / total:.1%}", f"{check.expected_shares[name]:.1%}"],
            numeric=(1, 2, 3),
        )
        for name, n in check.observed_units.items()
    ]
    head = _row(
        ["variant", "customers", "observed share", "expected share"], header=True, numeric=(1, 2, 3)
    )
    return (
        f"<p>{badge} χ² = {check.chi_square:.2f}, p = {check.p_value:.3g} "
        "(a mismatch is flagged below p = 0.001).</p>" + _table(head, rows)
    )


def _guardrails(review: ExperimentReview) -> str:
    if not review.guardrails:
        return '<p class="note">No guardrail is defined.</p>'
    names = [row.variant for row in review.variants]
    head = _row(
        ["metric", "better", "margin", *names, "treatment", "harm [interval]", "verdict"],
        header=True,
        numeric=range(2, 3 + len(names)),
    )
    rows = [line for guardrail in review.guardrails for line in _guardrail_rows(guardrail, names)]
    return _table(head, rows)


def _guardrail_rows(row: GuardrailRow, names: list[str]) -> Iterable[str]:
    def signed(value: float) -> str:
        return format_guardrail(row.metric, value, signed=True)

    common = [
        escape(row.metric),
        "lower" if row.lower_is_better else "higher",
        signed(row.margin).lstrip("+"),  # an amount of harm, not a change
        *(format_guardrail(row.metric, row.means.get(name)) for name in names),
    ]
    numeric = range(2, 3 + len(names))
    if not row.verdicts:
        yield _row(
            [*common, "", "", f'<span class="badge na">{escape(row.note or "n/a")}</span>'],
            numeric=numeric,
            escaped=True,
        )
    for verdict in row.verdicts:
        harm = (
            f"{signed(verdict.harm)} [{signed(verdict.harm_ci_low)}, "
            f"{signed(verdict.harm_ci_high)}]"
        )
        badge = f'<span class="badge {verdict.verdict}">{verdict.verdict}</span>'
        cells = [*common, escape(verdict.treatment), escape(harm), badge]
        yield _row(cells, numeric=numeric, escaped=True)


def _offpolicy(review: ExperimentReview) -> str:
    evaluation = review.offpolicy
    if evaluation is None:
        return (
            '<p class="note" id="offpolicy">Not available: no candidate policy with target '
            "propensities was given for these decisions.</p>"
        )
    experiment = review.experiment
    head = _row(
        ["estimator", "value", "interval", "effective sample size"], header=True, numeric=(1, 2, 3)
    )
    rows = [
        _row(
            [
                e.estimator.upper(),
                format_metric(experiment, e.value),
                f"{format_metric(experiment, e.ci_low)} to {format_metric(experiment, e.ci_high)}",
                f"{e.effective_sample_size:,.0f} of {e.n:,}",
            ],
            numeric=(1, 2, 3),
        )
        for e in evaluation.estimates
    ]
    return (
        f'<p id="offpolicy">Candidate <strong>{escape(evaluation.candidate)}</strong> '
        f"({escape(evaluation.description)}), over {evaluation.decisions:,} logged decisions: "
        f"estimated {format_metric(experiment, evaluation.headline.value)} per decision against "
        f"{format_metric(experiment, evaluation.logged_value)} logged.</p>" + _table(head, rows)
    )


def _footer(review: ExperimentReview) -> str:
    return (
        '<p class="note" style="margin-top:32px">Customers are assigned by a fixed hash of '
        "(experiment salt, customer id), the same at every touchpoint. Conversions and values "
        "come from the outcomes of each customer's decisions in their first variant. "
        f"Generated by Rapport as of {_when(review.as_of)}.</p>"
    )


def _decisive(comparison: Comparison) -> tuple[float, float, float]:
    lift = comparison.absolute_lift
    if comparison.always_valid is not None:
        return lift.estimate, comparison.always_valid.ci_low, comparison.always_valid.ci_high
    return lift.estimate, lift.ci_low, lift.ci_high


def _metric_name(review: ExperimentReview) -> str:
    return "Conversion" if review.metric == "conversion" else "Value (EUR)"


def _level(review: ExperimentReview) -> str:
    return f"{1 - review.experiment.alpha:.0%}"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def _table(head: str, rows: list[str]) -> str:
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _row(
    cells: Iterable[str],
    *,
    header: bool = False,
    numeric: Iterable[int] = (),
    escaped: bool = False,
    key: str | None = None,
) -> str:
    tag = "th" if header else "td"
    numbers = set(numeric)
    html = "".join(
        f"<{tag}{_NUMERIC if i in numbers else ''}>{cell if escaped else escape(cell)}</{tag}>"
        for i, cell in enumerate(cells)
    )
    attribute = f' data-variant="{escape(key)}"' if key else ""
    return f"<tr{attribute}>{html}</tr>"


_NUMERIC = ' class="num"'
