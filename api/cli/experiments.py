"""`rapport experiments ...`: analyse a per-unit CSV, review an experiment, manage the registry,
and run a synthetic experiment for the demo. The registry and the logs are those of the store
named by RAPPORT_STORE."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import typer
from rich.console import Console

from api.settings import Settings
from experiments.analysis import analyze
from experiments.definitions import Experiment, InvalidExperiment, load_experiments
from experiments.errors import InvalidUnits
from experiments.logs import LogSource, OfflineLogs, OnlineLogs
from experiments.offpolicy import greedy_candidate
from experiments.registry import declare_experiments, get_experiment, list_experiments
from experiments.report import render_report
from experiments.review import review_logged_experiment
from feature_store.errors import StoreError
from feature_store.factory import open_experiment_registry, open_store

experiments = typer.Typer(
    help="Experiments: analyse, review, define (the registry is in RAPPORT_STORE).",
    no_args_is_help=True,
)

DEMO_EXPERIMENT_STORE = "sqlite:///var/experiment-demo.db"
DEMO_EXPERIMENT_ID = "nba-personalisation"
DEMO_EXPERIMENT_END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


@experiments.command("analyze")
def analyze_command(
    input_csv: Annotated[
        Path,
        typer.Option(
            "--input", exists=True, dir_okay=False, help="CSV: variant, value[, covariate]."
        ),
    ],
    control: Annotated[
        str | None, typer.Option(help="The control variant; the first one by default.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    sequential: Annotated[
        bool, typer.Option(help="Add always-valid results (for repeated looks).")
    ] = False,
    weights: Annotated[
        str | None, typer.Option(help="Traffic weights for the SRM check, e.g. A=50,B=50.")
    ] = None,
) -> None:
    """Analyse a per-unit CSV (one row per unit) and print the result as JSON."""
    try:
        units = pd.read_csv(input_csv)
        result = analyze(units, control, _weights(weights), alpha, sequential)
    except (InvalidUnits, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise _fail(f"{input_csv}: {exc}") from None
    typer.echo(result.model_dump_json(indent=2))


@experiments.command("report")
def report_command(
    experiment_id: Annotated[str, typer.Argument(help="The experiment's id.")],
    out: Annotated[Path, typer.Option(help="File to write: .html, or .json for the data.")],
    offline: Annotated[
        Path | None,
        typer.Option(help="Read the logs from this offline store (rapport export), not online."),
    ] = None,
    as_of: Annotated[
        datetime | None, typer.Option(help="Review as of this UTC time; now by default.")
    ] = None,
    candidate: Annotated[
        Literal["greedy", "none"],
        typer.Option(help="Candidate policy for the off-policy estimate."),
    ] = "greedy",
) -> None:
    """Write the review report of an experiment (self-contained HTML, or JSON)."""
    settings = Settings()
    policy = settings.decision_policy()
    at = as_of or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        with (
            closing(open_experiment_registry(settings.store)) as registry,
            closing(open_store(settings.store, settings.engine)) as store,
        ):
            experiment = get_experiment(registry, experiment_id)
            source: LogSource = OfflineLogs(offline) if offline else OnlineLogs(store)
            review = review_logged_experiment(
                experiment,
                source,
                at=at,
                candidate=greedy_candidate(policy.catalogue) if candidate == "greedy" else None,
            )
    except StoreError as exc:
        raise _fail(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(review.model_dump_json(indent=2), encoding="utf-8")
    else:
        out.write_text(render_report(review), encoding="utf-8")
    typer.echo(f"{review.verdict.headline}\nWrote {out}")


@experiments.command("list")
def list_command() -> None:
    """Every experiment in the registry, one JSON object per line."""
    with closing(open_experiment_registry(Settings().store)) as registry:
        for experiment in list_experiments(registry):
            typer.echo(experiment.model_dump_json())


@experiments.command("load")
def load_command(
    definitions: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML file.")],
) -> None:
    """Create or replace the experiments of a YAML file in the registry."""
    settings = Settings()
    catalogue = settings.decision_policy().catalogue
    try:
        loaded = load_experiments(definitions)
        for experiment in loaded:
            experiment.check_catalogue(catalogue)
    except InvalidExperiment as exc:
        raise _fail(f"{definitions}: {exc}") from None
    with closing(open_experiment_registry(settings.store)) as registry:
        changed = declare_experiments(registry, loaded)
    typer.echo(f"{len(loaded)} experiments in {definitions}; created or replaced: {changed}")


@experiments.command("simulate")
def simulate_command(
    store_url: Annotated[
        str, typer.Option("--store", help="A fresh store for the demo (replaced if SQLite).")
    ] = DEMO_EXPERIMENT_STORE,
    customers: Annotated[int, typer.Option(min=10, help="Synthetic customers.")] = 2000,
    decisions: Annotated[int, typer.Option(min=10, help="Decisions in the experiment.")] = 16000,
    pre_period: Annotated[int, typer.Option(min=0, help="Decisions in the pre-period.")] = 6000,
    seed: Annotated[int, typer.Option(help="Seed of the population and the answers.")] = 7,
    end: Annotated[
        datetime,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"],
            help="When the simulated experiment ends (UTC): fixed, so a seed gives the same "
            "figures on any day.",
        ),
    ] = DEMO_EXPERIMENT_END,
) -> None:
    """Run the demo experiment (personalisation against a holdout) on a synthetic population.

    The population is loaded into a fresh store, then decisions go through the serving path
    with the experiment's assignment, and synthetic customers answer them. Its dates end at
    `--end`, not at the clock, so the same seed gives the same figures."""
    from api.cli.common import load_events, remove_sqlite_file
    from experiments.simulation import SimulationSpec, simulate_experiment
    from training.simulation.population import PopulationSpec, generate_population

    now = (end if end.tzinfo else end.replace(tzinfo=UTC)).astimezone(UTC)
    experiment = demo_experiment(now)
    settings = Settings(store=store_url)
    remove_sqlite_file(store_url)
    population = generate_population(
        PopulationSpec(customers=customers, seed=seed, start=now - timedelta(days=230))
    )
    spec = SimulationSpec(decisions=decisions, pre_period_decisions=pre_period, seed=seed)
    with (
        closing(open_store(store_url, settings.engine)) as store,
        closing(open_experiment_registry(store_url)) as registry,
    ):
        loaded = load_events(store, population.events)
        declare_experiments(registry, [experiment])
        report = simulate_experiment(
            store,
            experiment,
            sorted({event.customer_id for event in population.events}),
            policy=settings.decision_policy(),
            spec=spec,
            end=now,
        )
    typer.echo(f"Loaded {loaded:,} events of {customers:,} customers into {store_url}")
    typer.echo(report.model_dump_json(indent=2))
    typer.echo(
        f"Review it:\n  RAPPORT_STORE={store_url} rapport experiments report "
        f"{experiment.id} --out var/experiment-report.html"
    )


def demo_experiment(now: datetime) -> Experiment:
    """The demo's experiment: personalisation against a holdout, started 21 days before `now`."""
    return Experiment.model_validate(
        {
            "id": DEMO_EXPERIMENT_ID,
            "hypothesis": "Customers accept more next-best-actions when they are personalised "
            "than in a holdout that gets the same catalogue without personalisation.",
            "start": (now - timedelta(days=21)).isoformat(),
            "variants": [
                {
                    "name": "holdout",
                    "weight": 1,
                    "personalisation": False,
                    "description": "nothing learned: population rates, no defaults",
                },
                {
                    "name": "personalised",
                    "weight": 1,
                    "description": "the full profile and the champion model",
                },
            ],
            "min_units": 200,
        }
    )


def _weights(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, separator, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            separator = ""
        if not separator or not name.strip():
            raise typer.BadParameter(f"expected NAME=WEIGHT, got {part!r}", param_hint="--weights")
    return weights
