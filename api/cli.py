"""The `rapport` command line: serve the API, run the demo, report what the engine learns,
export the logs to the offline store."""

from __future__ import annotations

import os
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
import uvicorn
from pydantic import TypeAdapter, ValidationError
from rich.console import Console

from api.cli_experiments import experiments
from api.cli_models import evaluate_command, promote_command, train_command
from api.settings import Settings
from engine.events import Channel, Event, EventType
from feature_store.base import OnlineStore
from feature_store.credentials import DuplicateKeyName, KeyName, Scope, issue_key
from feature_store.credentials_factory import open_credentials
from feature_store.factory import open_store

if TYPE_CHECKING:
    from rich.table import Table

    from training.nba_simulation import NbaSimulationReport

app = typer.Typer(
    help="Rapport: learning-relationship personalisation engine.", no_args_is_help=True
)
keys = typer.Typer(
    help="API keys of touchpoint systems (the store comes from RAPPORT_STORE).",
    no_args_is_help=True,
)
app.add_typer(keys, name="keys")
app.add_typer(experiments, name="experiments")
app.command("train")(train_command)
app.command("promote")(promote_command)
app.command("evaluate")(evaluate_command)


def console() -> Console:
    """A console for this command: rich reads the terminal width (COLUMNS) when built."""
    return Console()


DEMO_STORE = "sqlite:///var/demo.db"
DEMO_CUSTOMER = "cust-demo"
DEMO_KEY_NAME = "demo"

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]


@app.command()
def serve(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Start the API. The store comes from the setting RAPPORT_STORE."""
    settings = Settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the app logs route templates, never paths that hold identifiers
        log_level=settings.log_level.lower(),
    )


@app.command()
def demo(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    customers: Annotated[int, typer.Option(help="Synthetic customers to load.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic population.")] = 7,
) -> None:
    """Load a fresh demo population into the embedded store and serve the API."""
    from training.synthetic import PopulationSpec, generate_population

    store_url = os.environ.get("RAPPORT_DEMO_STORE", DEMO_STORE)
    _remove_sqlite_file(store_url)
    settings = Settings(store=store_url)
    end = datetime.now(UTC).replace(microsecond=0)
    spec = PopulationSpec(customers=customers, seed=seed, start=end - timedelta(days=180))
    with console().status(f"Generating {customers} synthetic customers..."):
        population = generate_population(spec)
    with closing(open_store(store_url, settings.engine)) as store:
        loaded = load_events(store, [*population.events, *demo_customer_events(end)])
    key = create_key(store_url, DEMO_KEY_NAME, list(Scope))
    console().print(
        f"Loaded [bold]{loaded:,}[/] events for {customers + 1} customers into {store_url}"
    )
    # soft_wrap: long command lines stay whole, so they can be copied.
    console().print(what_to_try(host, port, key), soft_wrap=True, highlight=False)
    os.environ["RAPPORT_STORE"] = store_url
    serve(host=host, port=port, workers=1)


@app.command("learning-report")
def learning_report_command(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic population.")] = 7,
    days: Annotated[int, typer.Option(help="Days of history.")] = 180,
) -> None:
    """Measure what the engine learns against the synthetic population's latent truth."""
    from rich.table import Table

    from training.learning_report import learning_report
    from training.synthetic import PopulationSpec

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


@app.command("simulate-nba")
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
    from training.nba_simulation import NbaSimulation, TooFewTouches
    from training.synthetic import PopulationSpec

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


@app.command("simulate-logs")
def simulate_logs_command(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 1000,
    decisions: Annotated[int, typer.Option(help="Decisions, at touches drawn at random.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the population and of the simulation.")] = 7,
) -> None:
    """Write into the store (RAPPORT_STORE) what a live Rapport would have logged over 180 days
    of a synthetic population: its events, decisions with their propensities, and the
    customers' answers drawn from their latent affinities. Then `rapport export` and
    `rapport train` learn from it."""
    from training.logged_data import simulate_logs
    from training.nba_simulation import TooFewTouches

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


@app.command("export")
def export_command(
    out: Annotated[Path, typer.Option(help="Folder of the offline store.")] = Path("var/offline"),
    page_size: Annotated[
        int, typer.Option(min=1, help="Log entries read and written at a time.")
    ] = 50_000,
) -> None:
    """Export the event, decision and outcome logs of the store (RAPPORT_STORE) to Parquet,
    partitioned by date. Incremental and idempotent; erased customers are left out and removed
    from what earlier runs wrote."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from feature_store.errors import UnsupportedCapability
    from feature_store.offline import ExportProgress, OfflineStore

    settings = Settings()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with (
        closing(open_store(settings.store, settings.engine)) as store,
        Progress(*columns, TimeElapsedColumn(), console=console()) as bars,
    ):
        tasks = {
            "events": bars.add_task("event log (events, outcomes)", total=None),
            "decisions": bars.add_task("decision log", total=None),
        }

        def show(step: ExportProgress) -> None:
            total = step.high_water - step.start
            bars.update(tasks[step.log], total=total, completed=step.position - step.start)

        try:
            report = OfflineStore(out).export(store, page_size=page_size, progress=show)
        except UnsupportedCapability as exc:
            console().print(f"[red]{exc}: export needs a store that can read its logs.[/]")
            raise typer.Exit(1) from None
    table = Table(
        title=f"Exported to {out}",
        caption=f"{report.erasures_applied:,} new erasure records applied",
    )
    for name in ("table", "rows written", "files written", "partitions", "rows erased", "cursor"):
        table.add_column(name, justify="left" if name == "table" else "right")
    for name, counts in report.tables.items():
        table.add_row(
            name,
            f"{counts.rows_written:,}",
            f"{counts.files_written:,}",
            f"{len(counts.partitions):,}",
            f"{counts.rows_erased:,}",
            f"{counts.cursor:,}",
        )
    console().print(table)


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. atm-fleet.")],
    scopes: Annotated[
        str,
        typer.Option(help=f"Comma-separated, from: {', '.join(Scope)}. admin grants all."),
    ],
) -> None:
    """Create a key and print it once, alone on the last line. Only its hash is stored."""
    _check_name(name)
    wanted = _parse_scopes(scopes)
    try:
        key = create_key(Settings().store, name, wanted)
    except DuplicateKeyName as exc:
        console().print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    console().print(
        f"Created the key [bold]{name}[/] with the scopes {', '.join(sorted(wanted))}. "
        "Store it now: it cannot be shown again.",
        highlight=False,
    )
    typer.echo(key)


@keys.command("list")
def keys_list() -> None:
    """Every key, revoked ones included (never the keys or their hashes)."""
    from rich.table import Table

    with closing(open_credentials(Settings().store)) as credentials:
        records = credentials.list_keys()
    table = Table(title=f"API keys ({len(records)})")
    table.add_column("key_id", no_wrap=True)
    table.add_column("name")
    table.add_column("scopes")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("revoked (UTC)", no_wrap=True)
    for record in records:
        table.add_row(
            record.key_id,
            record.name,
            ", ".join(sorted(record.scopes)),
            _minutes(record.created_at),
            "" if record.revoked_at is None else _minutes(record.revoked_at),
        )
    console().print(table)


@keys.command("revoke")
def keys_revoke(
    key_id_or_name: Annotated[str, typer.Argument(help="The key_id or the name of a key.")],
) -> None:
    """Revoke a key. Running APIs refuse it within RAPPORT_AUTH_CACHE_SECONDS."""
    settings = Settings()
    with closing(open_credentials(settings.store)) as credentials:
        revoked = credentials.revoke(key_id_or_name, at=datetime.now(UTC))
    if not revoked:
        console().print(f"[red]No active key has the id or name {key_id_or_name!r}.[/]")
        raise typer.Exit(1)
    console().print(
        f"Revoked {key_id_or_name!r}. Running APIs refuse it within "
        f"{settings.auth_cache_seconds:g} s (RAPPORT_AUTH_CACHE_SECONDS).",
        highlight=False,
    )


def create_key(store_url: str, name: str, scopes: list[Scope]) -> str:
    """Issue a key, store its record, and return the key (the only time it exists)."""
    key, record = issue_key(name, scopes, at=datetime.now(UTC))
    with closing(open_credentials(store_url)) as credentials:
        credentials.save(record)
    return key


def _parse_scopes(text: str) -> list[Scope]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {scope.value for scope in Scope}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown scope {', '.join(unknown)!s}; choose from {', '.join(Scope)}"
            if unknown
            else f"give at least one of {', '.join(Scope)}",
            param_hint="--scopes",
        )
    return sorted({Scope(name) for name in names})


def _minutes(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _check_name(name: str) -> None:
    try:
        TypeAdapter(KeyName).validate_python(name)
    except ValidationError:
        raise typer.BadParameter(
            "1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
            param_hint="--name",
        ) from None


def load_events(store: OnlineStore, events: list[Event], batch_size: int = 1000) -> int:
    """Apply events in batches of whole customers (atomic per customer); returns the count."""
    by_customer: dict[str, list[Event]] = {}
    for event in events:
        by_customer.setdefault(event.customer_id, []).append(event)
    batch: list[Event] = []
    for customer_events in by_customer.values():
        batch.extend(customer_events)
        if len(batch) >= batch_size:
            store.apply_events(batch)
            batch = []
    if batch:
        store.apply_events(batch)
    return len(events)


def demo_customer_events(now: datetime) -> list[Event]:
    """A customer who withdrew 200 EUR without a receipt at ATMs every week for six weeks."""
    return [
        Event(
            event_id=f"demo-withdrawal-{week}",
            customer_id=DEMO_CUSTOMER,
            touchpoint="atm-0042",
            channel=Channel.ATM,
            type=EventType.REQUEST,
            occurred_at=now - timedelta(weeks=6 - week, hours=2),
            attributes={
                "request": "cash_withdrawal",
                "amount": 200,
                "currency": "EUR",
                "receipt": False,
            },
        )
        for week in range(6)
    ]


def _remove_sqlite_file(store_url: str) -> None:
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def what_to_try(host: str, port: int, key: str) -> str:
    """The demo's welcome: the key to export, then curl lines that use it (rich markup)."""
    base = f"http://{host}:{port}"
    headers = """-H "Authorization: Bearer $RAPPORT_KEY" -H 'content-type: application/json'"""
    return f"""
[bold]Rapport is starting on {base}[/]  (OpenAPI docs: {base}/docs)

The demo's API key has every scope. Set it in the shell you try the API from:
  export RAPPORT_KEY={key}

Ask the ATM what to pre-fill for a customer with a weekly habit:
  curl -s -X POST {base}/v1/decisions {headers} \\
    -d '{{"customer_id": "{DEMO_CUSTOMER}", "touchpoint": "atm-0042", "channel": "atm"}}'

Decline it (use the decision_id from the answer); three declines and it is not offered again:
  curl -s -X POST {base}/v1/outcomes {headers} \\
    -d '{{"decision_id": "<decision_id>", "id": "default:cash_withdrawal", "outcome": "declined"}}'

What Rapport knows, stated and learned, with reasons:
  curl -s {base}/v1/customers/{DEMO_CUSTOMER} -H "Authorization: Bearer $RAPPORT_KEY"

State a preference (it wins over what was learned):
  curl -s -X PUT {base}/v1/customers/{DEMO_CUSTOMER}/preferences {headers} \\
    -d '{{"preferences": {{"contact_channel": "sms", "receipt": true}}}}'

Send events from any touchpoint:
  curl -s -X POST {base}/v1/events {headers} \\
    -d '{{"events": [{{"event_id": "ev-1", "customer_id": "cust-new", "touchpoint": "app-ios",
    "channel": "mobile_app", "type": "request", "occurred_at": "2026-11-20T10:00:00Z",
    "attributes": {{"request": "top_up", "amount": 20, "currency": "EUR"}}}}]}}'
"""


if __name__ == "__main__":
    app()
