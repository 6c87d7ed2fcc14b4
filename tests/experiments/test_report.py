"""The review report renders in a real headless Chromium without errors, loads nothing from
anywhere, and shows the key numbers.

The browser is driven through the Chrome DevTools protocol with the `websockets` client that
uvicorn[standard] already brings: console errors, uncaught exceptions, CSP violations and every
network request are collected while the page loads. Chromium must be on PATH
(`.ci/ensure-chromium` installs Debian's package): a missing one fails, never skips.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.definitions import Experiment, validated
from experiments.logs import ExperimentLogs
from experiments.report import render_report
from experiments.review import ExperimentReview, review_experiment
from experiments.verdict import format_chance
from tests.browser import Chromium

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# -- a review with known numbers ------------------------------------------------------------------


def experiment() -> Experiment:
    return validated(
        {
            "id": "nba-holdout",
            "hypothesis": "Personalised actions convert more <script>alert(1)</script>.",
            "start": T0.isoformat(),
            "variants": [
                {"name": "holdout", "weight": 1, "personalisation": False},
                {"name": "personalised", "weight": 1, "exploration_epsilon": 0.1},
            ],
            "guardrails": [
                {"metric": "complaint_rate", "margin": 0.05},
                {"metric": "feedback_score", "margin": 1},
            ],
            "min_units": 100,
        }
    )  # fmt: skip


def known_review() -> ExperimentReview:
    """3,000 customers per variant converting at 10 % and 16 % (fixed draws)."""
    rng = np.random.default_rng(5)
    rows, events = [], []
    for variant, rate in (("holdout", 0.10), ("personalised", 0.16)):
        for i in range(3000):
            at = T0 + timedelta(hours=i / 100)
            value = float(rng.random() < rate)
            rows.append((f"{variant}-{i}", variant, at, 2, value, float(rng.poisson(1 + 3 * value)),
                         float(rng.random() < 0.05), 0.0, float(rng.integers(6, 11))))  # fmt: skip
            if value:
                events.append((f"{variant}-{i}", variant, at + timedelta(hours=2), 1.0))
    columns = ["unit_id", "variant", "first_exposed_at", "exposures", "value", "covariate",
               "complaint", "opt_out", "feedback_score"]  # fmt: skip
    units = pd.DataFrame(rows, columns=columns)
    metric_events = pd.DataFrame(events, columns=["unit_id", "variant", "at", "amount"])
    logs = ExperimentLogs(units=units, metric_events=metric_events)
    return review_experiment(experiment(), logs, at=T0 + timedelta(days=2))


@pytest.fixture(scope="module")
def review() -> ExperimentReview:
    return known_review()


def test_the_report_is_self_contained(review: ExperimentReview) -> None:
    html = render_report(review)

    assert "<script" not in html  # the hypothesis' markup is escaped
    assert "&lt;script&gt;" in html
    for reference in ("src=", "href=", "@import", "url(", 'http-equiv="refresh"'):
        assert reference not in html
    # The only URL is the SVG namespace, an identifier that is never fetched.
    assert html.count("http") == html.count("http://www.w3.org/2000/svg") + html.count("http-equiv")


def test_the_report_renders_in_chromium_without_errors_and_shows_the_key_numbers(
    review: ExperimentReview, chromium: Chromium, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(review), encoding="utf-8")

    load = chromium.load(page.as_uri())

    assert load.errors == []
    assert load.requests == [page.as_uri()]  # nothing but the page itself
    assert len(load.svg_widths) == 2
    assert min(load.svg_widths) > 300
    summary = {row.variant: row for row in review.variants}
    [comparison] = review.analysis.comparisons if review.analysis else []
    text = load.text
    assert "Verdict: ship" in text
    assert f"{summary['holdout'].units:,}" in text
    assert f"{summary['personalised'].mean:.2%}" in text
    assert f"{summary['holdout'].mean:.2%}" in text
    assert f"{comparison.absolute_lift.estimate * 100:+.2f} pp" in text
    assert f"{format_chance(comparison.chance_to_beat_control)}" in text
    assert "ok χ² = 0.00, p = 1" in text  # the sample-ratio check: 3,000 and 3,000
    assert review.analysis is not None
    assert review.analysis.cuped is not None
    assert f"{review.analysis.cuped.variance_reduction:.1%}" in text
    assert "holdout: personalisation off" in text
    assert "Not available" in text  # no off-policy candidate was given


def test_the_browser_check_catches_a_page_that_loads_or_logs_something(
    review: ExperimentReview, chromium: Chromium, tmp_path: Path
) -> None:
    page = tmp_path / "broken.html"
    html = render_report(review).replace(
        "</main>", '<img src="https://example.invalid/pixel.png"></main>'
    )
    page.write_text(html, encoding="utf-8")

    load = chromium.load(page.as_uri())

    assert any("Content Security Policy" in error for error in load.errors), load.errors
