"""`rapport serve` and `rapport demo`: the API, alone or over a freshly loaded demo population."""

from __future__ import annotations

import os
import socket
import tempfile
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
import uvicorn

from api.cli.common import console, load_events, remove_sqlite_file
from api.cli.keys import create_key
from api.settings import Settings
from engine.events import Channel, Event, EventType
from feature_store.credentials import Scope
from feature_store.factory import open_store

DEMO_STORE = "sqlite:///var/demo.db"
DEMO_CUSTOMER = "cust-demo"
DEMO_KEY_NAME = "demo"

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]


def serve(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Start the API. The store comes from the setting RAPPORT_STORE."""
    settings = Settings()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here and GET /metrics adds them up (api.metrics).
        folder = tempfile.mkdtemp(prefix="rapport-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        console().print(f"Metrics of the {workers} workers are gathered in {folder}")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # 28% less CPU per request than asyncio + h11 on the floor app (`make bench-stack`).
        loop="uvloop",
        http="httptools",
        access_log=False,  # the app logs route templates, never paths that hold identifiers
        log_level=settings.log_level.lower(),
    )


def demo(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    customers: Annotated[int, typer.Option(help="Synthetic customers to load.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic population.")] = 7,
) -> None:
    """Load a fresh demo population into the embedded store and serve the API."""
    from training.simulation.population import PopulationSpec, generate_population

    check_port_free(host, port)  # before a key is printed that would not work
    store_url = os.environ.get("RAPPORT_DEMO_STORE", DEMO_STORE)
    remove_sqlite_file(store_url)
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
    console().print(what_to_try(host, port, key, store_url), soft_wrap=True, highlight=False)
    os.environ["RAPPORT_STORE"] = store_url
    serve(host=host, port=port, workers=1)


def check_port_free(host: str, port: int) -> None:
    """Exit with a clear message if `host:port` cannot be listened on (busy, or not ours)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            console().print(
                f"[red]Cannot listen on {host}:{port} ({exc.strerror}). Is another server "
                f"running there? Choose another port: make demo PORT={port + 1}[/]",
                highlight=False,
            )
            raise typer.Exit(1) from None


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


def what_to_try(host: str, port: int, key: str, store_url: str = DEMO_STORE) -> str:
    """The demo's welcome: the key to export, then curl lines that use it (rich markup)."""
    base = f"http://{host}:{port}"
    headers = """-H "Authorization: Bearer $RAPPORT_KEY" -H 'content-type: application/json'"""
    return f"""
[bold]Rapport is starting on {base}[/]  (OpenAPI docs: {base}/docs)

The demo's API key has every scope. Set it in the shell you try the API from, with the
demo's store for the `rapport` commands (they live in .venv/bin):
  export RAPPORT_KEY={key}
  export RAPPORT_STORE={store_url}

Operator console: {base}/console/ (sign in with the key above)

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
