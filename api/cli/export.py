"""`rapport export`: the online logs to the offline Parquet store."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import console
from api.settings import Settings
from feature_store.factory import open_store


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
    from feature_store.offline.export import ExportProgress, OfflineStore

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
