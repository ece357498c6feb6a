"""Report plots: ROC curves and training curves (confusion matrices are in emo.report.metrics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torchmetrics.functional.classification import multiclass_auroc, multiclass_roc

log = logging.getLogger(__name__)


def plot_roc(probs: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """One-vs-rest ROC curve per class, with its AUC in the legend."""
    c = len(class_names)
    fpr, tpr, _ = multiclass_roc(probs, labels, c)
    auc = multiclass_auroc(probs, labels, c, average=None)
    fig = Figure(figsize=(6.5, 6), constrained_layout=True)
    ax = fig.subplots()
    for i, name in enumerate(class_names):
        ax.plot(fpr[i], tpr[i], label=f"{name} (AUC {auc[i]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC one-vs-rest, {title}")
    ax.legend(loc="lower right")
    return fig


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the TensorBoard logs under ``run_dir`` as {tag: [(epoch, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0}).Reload()
        tags = acc.Tags().get("scalars", [])
        # Lightning logs the epoch beside every metric, at the same step.
        step_to_epoch = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
        for tag in tags:
            for e in acc.Scalars(tag):
                # keyed by epoch: a resumed run overwrites the epochs it repeated
                scalars.setdefault(tag, {})[step_to_epoch.get(e.step, e.step)] = e.value
    return {tag: sorted(v.items()) for tag, v in scalars.items()}


def plot_curves(run_dir: Path) -> Figure | None:
    """Train/val accuracy and loss per epoch from a training run's logs; ``None`` if there are none."""
    scalars = read_scalars(run_dir)
    if "val/acc" not in scalars:
        return None
    fig = Figure(figsize=(12, 4.5), constrained_layout=True)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("acc", "loss")):
        for stage in ("train", "val"):
            points = scalars.get(f"{stage}/{metric}")
            if points:
                ax.plot([p[0] + 1 for p in points], [p[1] for p in points], marker=".", label=stage)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch ({run_dir.name})")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
