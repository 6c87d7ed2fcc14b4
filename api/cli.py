"""The `rapport` command line: serve the API, run the demo, report what the engine learns."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from api.settings import Settings
from engine.events import Channel, Event, EventType
from feature_store.base import OnlineStore
from feature_store.factory import open_store

app = typer.Typer(
    help="Rapport: learning-relationship personalisation engine.", no_args_is_help=True
)
console = Console()

DEMO_STORE = "sqlite:///var/demo.db"
DEMO_CUSTOMER = "cust-demo"

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
    with console.status(f"Generating {customers} synthetic customers..."):
        population = generate_population(spec)
    store = open_store(store_url, settings.engine)
    try:
        loaded = load_events(store, [*population.events, *demo_customer_events(end)])
    finally:
        store.close()
    console.print(
        f"Loaded [bold]{loaded:,}[/] events for {customers + 1} customers into {store_url}"
    )
    _print_what_to_try(host, port)
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
    with console.status("Replaying the synthetic population through the fold..."):
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
    console.print(table)
    typer.echo(report.model_dump_json(indent=2))


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


def _print_what_to_try(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    json_header = "-H 'content-type: application/json'"
    console.print(
        f"""
[bold]Rapport is starting on {base}[/]  (OpenAPI docs: {base}/docs)

Ask the ATM what to pre-fill for a customer with a weekly habit:
  curl -s -X POST {base}/v1/decisions {json_header} \\
    -d '{{"customer_id": "{DEMO_CUSTOMER}", "touchpoint": "atm-0042", "channel": "atm"}}'

Decline it (use the decision_id from the answer); three declines and it is not offered again:
  curl -s -X POST {base}/v1/outcomes {json_header} \\
    -d '{{"decision_id": "<decision_id>", "id": "default:cash_withdrawal", "outcome": "declined"}}'

What Rapport knows, stated and learned, with reasons:
  curl -s {base}/v1/customers/{DEMO_CUSTOMER}

State a preference (it wins over what was learned):
  curl -s -X PUT {base}/v1/customers/{DEMO_CUSTOMER}/preferences {json_header} \\
    -d '{{"preferences": {{"contact_channel": "sms", "receipt": true}}}}'

Send events from any touchpoint:
  curl -s -X POST {base}/v1/events {json_header} -d '{{"events": [{{"event_id": "ev-1",
    "customer_id": "cust-new", "touchpoint": "app-ios", "channel": "mobile_app",
    "type": "request", "occurred_at": "2026-11-20T10:00:00Z",
    "attributes": {{"request": "top_up", "amount": 20, "currency": "EUR"}}}}]}}'
"""
    )


if __name__ == "__main__":
    app()
