"""What the command groups share: the console, failing with a message, loading events into a
store, and resetting a demo's SQLite file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from engine.events import Event
from feature_store.base import OnlineStore


def console() -> Console:
    """A console for this command: rich reads the terminal width (COLUMNS) when built."""
    return Console()


def fail(message: str) -> typer.Exit:
    """Print `message` in red; raise the returned Exit."""
    console().print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


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


def remove_sqlite_file(store_url: str) -> None:
    """Delete a `sqlite:///` store's file with its WAL and shared-memory files (a fresh demo)."""
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
