"""Plots of a training run, as PNG files (matplotlib's Agg backend: no display needed).

* `calibration.png`: reliability curve, mean probability vs acceptance rate by decile of
  probability, for the model and the baselines;
* `gains.png`: cumulative gains, the share of all acceptances found in the top x% of holdout
  rows ranked by probability (random ranking: the diagonal), with the model's lift at 10%;
* `learning_curve.png`: holdout log loss and AUC, and fit log loss, by training rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; set before pyplot is imported
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from training.learning_curve import LearningPoint

FloatArray = npt.NDArray[np.float64]
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Curves:
    """Holdout labels of the actions, each scorer's probabilities for them, the learning curve."""

    accepted: npt.NDArray[np.bool_]
    probability: dict[str, FloatArray]
    learning: list[LearningPoint] = field(default_factory=list)


def write_plots(curves: Curves, directory: Path) -> list[Path]:
    """Write the plots into `directory` (created if needed); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [_calibration(curves, directory / "calibration.png")]
    paths.append(_gains(curves, directory / "gains.png"))
    if curves.learning:
        paths.append(_learning(curves.learning, directory / "learning_curve.png"))
    return paths


def reliability(
    accepted: npt.NDArray[np.bool_], probability: FloatArray, bins: int = CALIBRATION_BINS
) -> tuple[FloatArray, FloatArray]:
    """(mean probability, acceptance rate) per quantile bin of probability."""
    order = np.argsort(probability, kind="stable")
    groups = [group for group in np.array_split(order, bins) if len(group)]
    mean_p = np.array([probability[g].mean() for g in groups])
    rate = np.array([accepted[g].mean() for g in groups])
    return mean_p, rate


def gains(
    accepted: npt.NDArray[np.bool_], probability: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(share of rows, share of acceptances) ranking rows by probability, from (0, 0)."""
    order = np.argsort(-probability, kind="stable")
    found = np.cumsum(accepted[order].astype(float))
    total = max(found[-1], 1.0) if len(found) else 1.0
    share_rows = np.arange(len(order) + 1) / max(len(order), 1)
    return share_rows, np.concatenate([[0.0], found / total])


def _calibration(curves: Curves, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
    for name, probability in curves.probability.items():
        mean_p, rate = reliability(curves.accepted, probability)
        axes.plot(mean_p, rate, marker="o", label=name)
    axes.set(xlabel="mean predicted acceptance", ylabel="observed acceptance rate")
    axes.set_title("Calibration on the holdout (deciles)")
    axes.legend()
    return _save(figure, path)


def _gains(curves: Curves, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    for name, probability in curves.probability.items():
        share_rows, share_found = gains(curves.accepted, probability)
        top = int(np.searchsorted(share_rows, 0.1))
        lift = share_found[top] / share_rows[top] if share_rows[top] > 0 else float("nan")
        axes.plot(share_rows, share_found, label=f"{name} (lift@10% {lift:.2f})")
    axes.set(xlabel="share of holdout offers, best first", ylabel="share of acceptances")
    axes.set_title("Cumulative gains on the holdout")
    axes.legend()
    return _save(figure, path)


def _learning(points: list[LearningPoint], path: Path) -> Path:
    figure, (loss_axes, auc_axes) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = [point.rows for point in points]
    loss_axes.plot(
        rows, [p.fit_log_loss for p in points], marker="o", label="training rows (in sample)"
    )
    loss_axes.plot(rows, [p.holdout_log_loss for p in points], marker="o", label="holdout")
    loss_axes.set(xlabel="training rows", ylabel="log loss", title="Log loss")
    loss_axes.legend()
    auc_axes.plot(rows, [p.holdout_auc for p in points], marker="o", color="C1")
    auc_axes.set(xlabel="training rows", ylabel="AUC", title="Holdout AUC")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
