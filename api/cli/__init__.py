"""The `rapport` command line: one module per command group, assembled here.

* `serve`, `demo` (`api.cli.serve`);
* `keys create|list|revoke` (`api.cli.keys`);
* `export` (`api.cli.export`);
* `train`, `promote`, `evaluate` (`api.cli.models`);
* `experiments ...` (`api.cli.experiments`);
* `learning-report`, `simulate-nba`, `simulate-logs` (`api.cli.simulate`).
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Annotated

import typer

from api.cli.experiments import experiments
from api.cli.export import export_command
from api.cli.keys import keys
from api.cli.models import evaluate_command, promote_command, train_command
from api.cli.serve import demo, serve
from api.cli.simulate import learning_report_command, simulate_logs_command, simulate_nba_command

app = typer.Typer(
    help="Rapport: learning-relationship personalisation engine.", no_args_is_help=True
)


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"rapport {package_version('rapport')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Rapport: learning-relationship personalisation engine."""


app.command("serve")(serve)
app.command("demo")(demo)
app.add_typer(keys, name="keys")
app.command("export")(export_command)
app.command("train")(train_command)
app.command("promote")(promote_command)
app.command("evaluate")(evaluate_command)
app.add_typer(experiments, name="experiments")
app.command("learning-report")(learning_report_command)
app.command("simulate-nba")(simulate_nba_command)
app.command("simulate-logs")(simulate_logs_command)

__all__ = ["app"]

if __name__ == "__main__":
    app()
