"""`rapport train`, `rapport promote` and `rapport evaluate`: the model's life cycle from the
command line. MLflow and the training stack are imported inside the commands (seconds to
import), so that the rest of the CLI starts fast.

The MLflow store comes from RAPPORT_MLFLOW_URI (a local SQLite store by default), the model's
name from RAPPORT_MODEL_NAME, the promotion rule from RAPPORT_PROMOTE_*.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from api.model_server import local_sqlite_file
from api.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from rich.progress import Progress
    from rich.table import Table

    from training.bundle import ModelBundle
    from training.evaluate import FrameScorer
    from training.registry import Comparison, ModelRegistry, PromotionRule
    from training.train import TrainConfig

Offline = Annotated[Path, typer.Option(help="Folder of the offline store (`rapport export`).")]
DEFAULT_OFFLINE = Path("var/offline")
#: The metrics shown first in tables, in this order; the others follow alphabetically.
KEY_METRICS = (
    "holdout.auc",
    "holdout.log_loss",
    "holdout.brier",
    "holdout.ece",
    "holdout.precision_at_1",
    "holdout.snips_value",
    "holdout.default_precision",
    "holdout.default_coverage",
)


def console() -> Console:
    return Console()


def fail(message: str) -> typer.Exit:
    """Print `message` in red; raise the returned Exit."""
    console().print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


def train_command(
    offline: Offline = DEFAULT_OFFLINE,
    run_name: Annotated[
        str | None, typer.Option(help="Name of the MLflow run (default: train-<UTC time>).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the models' randomness.")] = 0,
    threads: Annotated[
        int,
        typer.Option(
            min=1, help="Fitting threads; more than the free cores slows training (OpenMP)."
        ),
    ] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Replay the offline store on this Dask scheduler (tcp://host:8786), or `local` "
            "for a local cluster of one worker per core (default: RAPPORT_DASK_SCHEDULER; "
            "unset: in this process)."
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Customer partitions of a Dask replay (default: 4 per worker thread, at "
            "least one per 100k events).",
        ),
    ] = None,
) -> None:
    """Train on the offline store, log an MLflow run (metrics against the baselines and the
    champion on the same holdout, plots, the model) and register it as the `challenger`.

    With a Dask scheduler the point-in-time replay runs on the cluster, partitioned by
    customer (`training.distributed`); training then runs here, on the gathered examples.
    The run records the cluster, the partitioning and each phase's seconds."""
    from training.registry import CHALLENGER, CHAMPION
    from training.tracking import TrackingTarget, log_training
    from training.train import NotEnoughData, TrainConfig, train

    settings = Settings()
    registry = _registry(settings)
    config = TrainConfig(seed=seed, threads=threads)
    cluster = scheduler or settings.dask_scheduler
    with _progress() as bars:
        began = time.perf_counter()
        if cluster:
            examples, replay_params = _examples_on_cluster(
                bars, offline, settings, cluster, partitions
            )
        else:
            examples, replay_params = _examples(bars, offline, settings), {"replay.mode": "local"}
        phases: dict[str, str | int | float] = {
            **replay_params,
            "phase.examples_seconds": round(time.perf_counter() - began, 3),
        }
        champion_version, champion = _champion(bars, registry)
        task = bars.add_task("training", total=None)

        def show(stage: str, number: int, total: int) -> None:
            bars.update(task, description=f"training: {stage}", total=total, completed=number - 1)

        began = time.perf_counter()
        try:
            result = train(examples, config=config, champion=champion, progress=show)
        except NotEnoughData as exc:
            raise fail(f"Not enough data to train: {exc}") from None
        phases["phase.train_seconds"] = round(time.perf_counter() - began, 3)
        bars.update(task, description="training", completed=bars.tasks[task].total or 1)
        logging = bars.add_task("logging the MLflow run", total=None)
        target = TrackingTarget(
            settings.mlflow_uri, settings.mlflow_experiment, settings.mlflow_artifacts
        )
        run = log_training(
            result,
            target,
            source=str(offline.resolve()),
            examples=examples,
            champion_version=champion_version,
            run_name=run_name or f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            step=lambda part: bars.update(logging, description=f"logging the MLflow run: {part}"),
            extra_params=phases,
            extra_tags={"rapport.replay": str(phases.get("replay.mode", "dask"))},
        )
        bars.update(logging, description="logging the MLflow run", total=1, completed=1)
        registry = registry or _open_registry(settings)
        version = registry.register(run.model_uri, run_id=run.run_id, alias=CHALLENGER)
    columns = {"model": result.metrics, **result.baselines}
    if champion_version is not None:
        columns[f"{CHAMPION} (v{champion_version})"] = columns.pop(CHAMPION)
    console().print(
        metrics_table(
            f"Holdout metrics: the new model against the baselines ({examples.shape[0]:,} "
            f"examples, holdout {result.dataset.get('holdout_rows', '?')} rows)",
            columns,
            highlight=settings.promote_metric,
        )
    )
    where = "" if offline == DEFAULT_OFFLINE else f" --offline {offline}"
    console().print(
        f"MLflow run [bold]{run.run_id}[/] registered as [bold]{settings.model_name}[/] version "
        f"[bold]{version.version}[/], alias [bold]{CHALLENGER}[/]. Next: `rapport evaluate"
        f"{where}`, then `rapport promote{where}`.",
        highlight=False,
    )


def promote_command(
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the challenger does not win.")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Restore the champion the current one replaced.")
    ] = False,
    offline: Annotated[
        Path | None,
        typer.Option(
            help="Compare on the holdout of this offline store (re-evaluating both models); "
            "by default, the comparison logged by the challenger's training run is used, "
            "when it was against the current champion."
        ),
    ] = None,
) -> None:
    """Move the `champion` alias to the challenger if it beats the champion on the same
    holdout by RAPPORT_PROMOTE_METRIC (or with --force), recording why on the challenger's run;
    or, with --rollback, restore the previous champion. Running APIs pick it up when they poll
    (RAPPORT_MODEL_POLL_SECONDS) or on POST /v1/admin/models/reload."""
    from training.registry import (
        NoComparison,
        NoSuchVersion,
        NothingToRollBack,
        PromotionRule,
        RegistryError,
    )

    settings = Settings()
    registry = _registry(settings)
    if registry is None:
        raise fail(f"No MLflow store at {settings.mlflow_uri}: run `rapport train` first.")
    try:
        if rollback:
            replaced, restored = registry.rollback(reason="rapport promote --rollback")
            console().print(
                f"Rolled back: [bold]{settings.model_name}@champion[/] is version "
                f"[bold]{restored}[/] again (it was {replaced}).",
                highlight=False,
            )
            return
        rule = PromotionRule(
            settings.promote_metric,
            settings.promote_higher_wins,
            settings.promote_min_improvement,
        )
        comparison = _comparison(registry, rule, settings, offline)
        promotion = registry.promote(rule, comparison, force=force)
    except (NothingToRollBack, NoSuchVersion) as exc:
        raise fail(str(exc)) from None
    except NoComparison as exc:
        raise fail(f"{exc}: give --offline to compare them, or --force.") from None
    except RegistryError as exc:
        raise fail(f"The MLflow registry could not answer: {exc}") from None
    if not promotion.promoted:
        console().print(
            f"Refused: version {promotion.challenger} {promotion.reason}. "
            "Use --force to promote it anyway.",
            highlight=False,
        )
        raise typer.Exit(1)
    console().print(
        f"Promoted: [bold]{settings.model_name}@champion[/] is version "
        f"[bold]{promotion.challenger}[/] (was {promotion.previous_champion or 'none'}): "
        f"{promotion.reason}.",
        highlight=False,
    )


def evaluate_command(
    offline: Offline = DEFAULT_OFFLINE,
    version: Annotated[
        list[str] | None,
        typer.Option(help="A registered version to evaluate (repeat the option for several)."),
    ] = None,
) -> None:
    """Evaluate the champion and the challenger (or the given versions) on the holdout of the
    offline store, beside the baselines, and print the table."""
    from training.baselines import OnlineRatesScorer, PopularityScorer
    from training.registry import CHALLENGER, CHAMPION
    from training.train import NotEnoughData, TrainConfig, time_split

    settings = Settings()
    registry = _registry(settings)
    if registry is None:
        raise fail(f"No MLflow store at {settings.mlflow_uri}: run `rapport train` first.")
    aliases = registry.alias_versions()
    wanted = _versions_to_evaluate(aliases, version or [])
    if not wanted:
        raise fail(f"{settings.model_name} has neither a {CHAMPION} nor a {CHALLENGER}.")
    config = TrainConfig()
    with _progress() as bars:
        examples = _examples(bars, offline, settings)
        try:
            split = time_split(examples, config)
        except NotEnoughData as exc:
            raise fail(f"Not enough data to evaluate: {exc}") from None
        scorers: dict[str, FrameScorer] = {}
        for label, number in wanted.items():
            task = bars.add_task(f"loading version {number}", total=None)
            scorers[label] = _bundle(registry, number)
            bars.update(task, total=1, completed=1)
        scorers["popularity"] = PopularityScorer(split.train)
        scorers["online_rates"] = OnlineRatesScorer(split.train)
        task = bars.add_task("evaluating", total=len(scorers))
        columns = {}
        for label, scorer in scorers.items():
            columns[label] = _evaluate(scorer, split.holdout, config)
            bars.advance(task)
    start = split.holdout["decided_at"].min()
    console().print(
        metrics_table(
            f"Holdout of {offline}: {len(split.holdout):,} rows from {start:%Y-%m-%d %H:%M}",
            columns,
            highlight=settings.promote_metric,
        )
    )


# ---- helpers ----


def metrics_table(
    title: str, columns: Mapping[str, Mapping[str, float]], *, highlight: str | None = None
) -> Table:
    """One row per metric (the key ones first), one column per model."""
    from rich.table import Table

    names = sorted({name for values in columns.values() for name in values})
    ordered = [m for m in KEY_METRICS if m in names] + [m for m in names if m not in KEY_METRICS]
    table = Table(title=title)
    table.add_column("metric")
    for label in columns:
        table.add_column(label, justify="right")
    for name in ordered:
        label = f"[bold]{name}[/]" if name == highlight else name
        table.add_row(label, *(_number(values.get(name)) for values in columns.values()))
    return table


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if value.is_integer() and abs(value) >= 2:  # a count: rows, decisions
        return f"{value:,.0f}"
    return f"{value:.4f}"


def _evaluate(scorer: FrameScorer, holdout: pd.DataFrame, config: TrainConfig) -> dict[str, float]:
    from training.evaluate import evaluate

    return evaluate(
        scorer,
        holdout,
        min_default_acceptance=config.min_default_acceptance,
        k=config.ranking_k,
    )


@contextmanager
def _progress() -> Iterator[Progress]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
    with Progress(*columns, MofNCompleteColumn(), TimeElapsedColumn(), console=console()) as bars:
        yield bars


def _examples(bars: Progress, offline: Path, settings: Settings) -> pd.DataFrame:
    from training.dataset import load_examples

    if not offline.is_dir():
        raise fail(f"No offline store at {offline}: run `rapport export --out {offline}` first.")
    task = bars.add_task(f"replaying the offline store {offline}", total=None)
    examples = load_examples(offline, settings.engine)
    bars.update(task, total=len(examples), completed=len(examples))
    return examples


def _examples_on_cluster(
    bars: Progress, offline: Path, settings: Settings, scheduler: str, partitions: int | None
) -> tuple[pd.DataFrame, dict[str, str | int | float]]:
    from training.distributed import replay_on_cluster

    if not offline.is_dir():
        raise fail(f"No offline store at {offline}: run `rapport export --out {offline}` first.")
    task = bars.add_task(f"replaying {offline} on Dask ({scheduler})", total=None)
    try:
        replay = replay_on_cluster(scheduler, offline, settings.engine, partitions=partitions)
    except OSError as exc:  # no scheduler at that address
        raise fail(f"Cannot reach the Dask scheduler {scheduler}: {exc}") from None
    bars.update(task, total=len(replay.examples), completed=len(replay.examples))
    return replay.examples, {"replay.mode": "dask", **replay.params()}


def _champion(
    bars: Progress, registry: ModelRegistry | None
) -> tuple[str | None, ModelBundle | None]:
    """The registered champion (its version and bundle), to compare on the same holdout;
    (None, None) if there is none or it cannot be loaded (the training goes on uncompared)."""
    from training.bundle import BundleInvalid
    from training.registry import CHAMPION

    version = registry.alias_versions().get(CHAMPION) if registry is not None else None
    if registry is None or version is None:
        return None, None
    task = bars.add_task(f"loading the champion (version {version})", total=None)
    try:
        bundle = registry.load_version(version).bundle
    except BundleInvalid as exc:
        bars.console.print(
            f"[yellow]The champion (version {version}) cannot be loaded, so the new model is "
            f"not compared with it: {exc}[/]",
            highlight=False,
        )
        return None, None
    bars.update(task, total=1, completed=1)
    return version, bundle


def _bundle(registry: ModelRegistry, version: str) -> ModelBundle:
    """The bundle of `version`; exits with the reason if it is missing or does not verify."""
    from training.bundle import BundleInvalid
    from training.registry import NoSuchVersion

    try:
        return registry.load_version(version).bundle
    except (NoSuchVersion, BundleInvalid) as exc:
        raise fail(f"Version {version} cannot be loaded: {exc}") from None


def _registry(settings: Settings) -> ModelRegistry | None:
    """The registry, or None if a local store has no database yet (nothing trained)."""
    database = local_sqlite_file(settings.mlflow_uri)
    if database is not None and not database.exists():
        return None
    return _open_registry(settings)


def _open_registry(settings: Settings) -> ModelRegistry:
    from training.registry import ModelRegistry

    return ModelRegistry(
        settings.mlflow_uri, settings.model_name, signing_key=settings.model_signing_key_bytes()
    )


def _versions_to_evaluate(aliases: Mapping[str, str], versions: Sequence[str]) -> dict[str, str]:
    """Column label -> version: the given versions, else the champion and the challenger."""
    from training.registry import CHALLENGER, CHAMPION

    if versions:
        named = {number: alias for alias, number in aliases.items()}
        return {
            f"v{number}" + (f" ({named[number]})" if number in named else ""): number
            for number in versions
        }
    return {
        f"{alias} (v{aliases[alias]})": aliases[alias]
        for alias in (CHAMPION, CHALLENGER)
        if alias in aliases
    }


@dataclass(frozen=True)
class _Logged:
    """The challenger's training run's own comparison with the champion."""

    champion_version: str
    challenger: float | None
    champion: float | None


def _comparison(
    registry: ModelRegistry, rule: PromotionRule, settings: Settings, offline: Path | None
) -> Comparison | None:
    """Both models' metric on the same holdout: re-evaluated on `offline`'s, or as the
    challenger's training run measured them (if against the current champion). None when
    there is no champion, or no comparison can be made (then only --force promotes)."""
    from training.registry import CHALLENGER, CHAMPION, Comparison, NoSuchVersion

    aliases = registry.alias_versions()
    challenger, champion = aliases.get(CHALLENGER), aliases.get(CHAMPION)
    if challenger is None:
        raise NoSuchVersion(f"{settings.model_name} has no {CHALLENGER}: train one first")
    if champion is None or champion == challenger:
        return None
    if offline is not None:
        return _reevaluated(registry, rule, offline, settings, challenger, champion)
    logged = _logged_comparison(registry, rule, challenger)
    if logged is None or logged.champion_version != champion:
        console().print(
            f"The challenger's training run was not compared with the current champion "
            f"(version {champion}): give --offline to compare them on its holdout.",
            highlight=False,
        )
        return None
    if logged.challenger is None or logged.champion is None:
        console().print(f"The challenger's run has no {rule.metric} for both models.")
        return None
    run_id = registry.version(challenger).run_id
    return Comparison(
        logged.challenger, logged.champion, f"the holdout of the challenger's run {run_id}"
    )


def _logged_comparison(
    registry: ModelRegistry, rule: PromotionRule, challenger: str
) -> _Logged | None:
    run_id = registry.version(challenger).run_id
    if run_id is None:
        return None
    metrics, tags = registry.run_record(run_id)
    champion_version = tags.get("rapport.champion_version") or None
    if champion_version is None:
        return None
    return _Logged(
        champion_version,
        metrics.get(rule.metric),
        metrics.get(f"baseline.champion.{rule.metric}"),
    )


def _reevaluated(
    registry: ModelRegistry,
    rule: PromotionRule,
    offline: Path,
    settings: Settings,
    challenger: str,
    champion: str,
) -> Comparison | None:
    from training.registry import Comparison
    from training.train import TrainConfig, time_split

    config = TrainConfig()
    with _progress() as bars:
        split = time_split(_examples(bars, offline, settings), config)
        values: dict[str, float | None] = {}
        for version in (challenger, champion):
            task = bars.add_task(f"evaluating version {version}", total=None)
            bundle = _bundle(registry, version)
            values[version] = _evaluate(bundle, split.holdout, config).get(rule.metric)
            bars.update(task, total=1, completed=1)
    challenger_value, champion_value = values[challenger], values[champion]
    if challenger_value is None or champion_value is None:
        console().print(f"{rule.metric} cannot be measured on the holdout of {offline}.")
        return None
    start = split.holdout["decided_at"].min()
    return Comparison(
        challenger_value,
        champion_value,
        f"the holdout of {offline} ({len(split.holdout):,} rows from {start:%Y-%m-%d %H:%M})",
    )
