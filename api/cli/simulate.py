"""`rapport learning-report`, `simulate-nba` and `simulate-logs`: the engine measured on the
synthetic population, and the logs a live Rapport would have written for it. The simulation
is imported inside the commands, so that the rest of the CLI starts fast."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from api.cli.common import console, load_events
from api.settings import Settings
from feature_store.factory import open_store

if TYPE_CHECKING:
    from rich.table import Table

    from training.simulation.nba import NbaSimulationReport


def learning_report_command(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic population.")] = 7,
    days: Annotated[int, typer.Option(help="Days of history.")] = 180,
) -> None:
    """Measure what the engine learns against the synthetic population's latent truth."""
    from rich.table import Table

    from training.simulation.learning_report import learning_report
    from training.simulation.population import PopulationSpec

    spec = PopulationSpec(
        customers=customers, seed=seed, days=days, start=datetime(2026, 1, 1, tzinfo=UTC)
    )
    with console().status("Replaying the synthetic population through the fold..."):
        report = learning_report(spec, Settings().engine)
    table = Table(title=f"What Rapport learned ({report.customers:,} customers, seed {seed})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    channel, defaults = report.channel, report.defaults
    for measure, value in [
        ("customers with >= 5 contact choices", f"{channel.customers:,}"),
        ("  learned contact channel = latent", f"{channel.learned_equals_latent:.1%}"),
        (
            "  baseline: population's top channel = latent",
            f"{channel.population_mode_equals_latent:.1%}",
        ),
        (
            "every customer with a contact: learned = latent",
            f"{channel.all_learned_equals_latent:.1%}",
        ),
        ("requests with values to pre-fill", f"{defaults.requests:,}"),
        ("  a default was offered (coverage)", f"{defaults.coverage:.1%}"),
        ("  offered default = the request made (precision)", f"{defaults.precision:.1%}"),
        ("  ceiling: requests equal to the latent habit", f"{defaults.habitual_requests:.1%}"),
    ]:
        table.add_row(measure, value)
    console().print(table)
    typer.echo(report.model_dump_json(indent=2))


def simulate_nba_command(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 1000,
    decisions: Annotated[int, typer.Option(help="Decisions, at touches drawn at random.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the population and of the simulation.")] = 7,
    strategy: Annotated[
        Literal["epsilon_greedy", "thompson", "off"], typer.Option(help="Rapport's exploration.")
    ] = "epsilon_greedy",
    slate: Annotated[
        int, typer.Option(min=1, max=20, help="Actions offered per decision, at most.")
    ] = 3,
    objective: Annotated[
        Literal["expected_value", "acceptance"],
        typer.Option(help="What Rapport maximises: propensity x value x weight, or x weight."),
    ] = "expected_value",
) -> None:
    """Measure next-best-action against random and oracle policies on the synthetic population."""
    from training.simulation.nba import NbaSimulation, TooFewTouches
    from training.simulation.population import PopulationSpec

    spec = PopulationSpec(customers=customers, seed=seed, start=datetime(2026, 1, 1, tzinfo=UTC))
    simulation = NbaSimulation(
        spec,
        decisions=decisions,
        strategy=strategy,
        slate=slate,
        objective=objective,
        config=Settings().engine,
    )
    try:
        with console().status("Replaying the synthetic population with four policies..."):
            report = simulation.run()
    except TooFewTouches as exc:
        console().print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    console().print(_nba_table(report))
    console().print(f"{report.events:,} events replayed in {report.runtime_seconds:.1f} s")
    typer.echo(report.model_dump_json(indent=2))


def simulate_logs_command(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 1000,
    decisions: Annotated[int, typer.Option(help="Decisions, at touches drawn at random.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the population and of the simulation.")] = 7,
) -> None:
    """Write into the store (RAPPORT_STORE) what a live Rapport would have logged over 180 days
    of a synthetic population: its events, decisions with their propensities, and the
    customers' answers drawn from their latent affinities. Then `rapport export` and
    `rapport train` learn from it."""
    from training.simulation.logged_data import simulate_logs
    from training.simulation.nba import TooFewTouches

    settings = Settings()
    try:
        with console().status(f"Simulating {decisions:,} decisions for {customers:,} customers..."):
            logs = simulate_logs(customers, decisions, seed, config=settings.engine)
    except TooFewTouches as exc:
        console().print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    with (
        closing(open_store(settings.store, settings.engine)) as store,
        console().status("Writing the logs..."),
    ):
        loaded = load_events(store, logs.events)
        for decision in logs.decisions:
            store.log_decision(decision)
    console().print(
        f"Logged [bold]{loaded:,}[/] events and {len(logs.decisions):,} decisions "
        f"into {settings.store}",
        highlight=False,
    )


def _nba_table(report: NbaSimulationReport) -> Table:
    from rich.table import Table

    policies = [report.rapport, report.random, report.oracle, report.oracle_value]
    table = Table(
        title=f"Next-best-action: {report.decisions:,} decisions, {report.customers:,} customers, "
        f"seed {report.seed}, {report.strategy}, slates of up to {report.slate}"
    )
    table.add_column("measure")
    for name in ("Rapport", "random", "oracle", "oracle (value)"):
        table.add_column(name, justify="right")
    for measure, values in [
        ("decisions that offered an action", [f"{p.decisions_with_actions:,}" for p in policies]),
        ("  first offer accepted", [f"{p.acceptance_rate:.1%}" for p in policies]),
        ("offers", [f"{p.offers:,}" for p in policies]),
        ("  accepted", [f"{p.offers_accepted:,}" for p in policies]),
        ("value accepted (EUR)", [f"{p.value_accepted_eur:,.0f}" for p in policies]),
        ("expected value offered (EUR)", [f"{p.expected_value_eur:,.0f}" for p in policies]),
        ("sales during an open problem", [f"{p.violations.service_first}" for p in policies]),
        ("contacts without consent", [f"{p.violations.no_consent}" for p in policies]),
        ("caps or cooldowns broken", [f"{p.violations.caps}" for p in policies]),
    ]:
        table.add_row(measure, *values)
    return table
