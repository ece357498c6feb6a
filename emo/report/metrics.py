"""The one metric vocabulary of emo: a stage's torchmetrics, the summary in ``metrics.json``, its
writer and its table.

The training system (validation and test stages), ``emo.evaluate`` and the scripts all score
through :class:`StageMetrics`, and ``train`` and ``evaluate`` both write ``metrics.json`` through
:func:`write_metrics` with the keys of :func:`summarize`: ``accuracy``, ``n``, ``macro_f1``,
``per_class`` (precision, recall, f1, support) and, when FER+ people labels are known,
``agreement`` and ``agreement_n``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from torch import nn
from torchmetrics import MetricCollection, SumMetric
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

#: Per-class scores logged as ``<stage>/<name>_<class>``.
PER_CLASS = ("precision", "recall", "f1", "support")


class StageMetrics(nn.Module):
    """One stage's metrics, updated batch by batch (synced over DDP processes when computed).

    ``scores`` grades predictions against the labels: per-class precision, recall and F1 and the
    confusion matrix, whose counts give the accuracy exactly (float64, as emo always reported it);
    ``agree_hits`` / ``agree_n`` count agreement with the people labels (FER+ majority; ``-1``:
    none among the classes, left out) when a batch carries them.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        c = num_classes
        self.scores = MetricCollection(
            {
                "precision": MulticlassPrecision(c, average="none"),
                "recall": MulticlassRecall(c, average="none"),
                "f1": MulticlassF1Score(c, average="none"),
                "cm": MulticlassConfusionMatrix(c),  # rows: true classes, columns: predictions
            }
        )
        self.agree_hits, self.agree_n = SumMetric(), SumMetric()

    def update(self, preds: torch.Tensor, labels: torch.Tensor, people: torch.Tensor | None = None) -> None:
        """``preds``: logits or probabilities (B, C); ``labels``, ``people``: (B,)."""
        self.scores.update(preds, labels)
        if people is not None:
            counted = people >= 0
            self.agree_hits.update((preds.argmax(-1) == people)[counted].sum())
            self.agree_n.update(counted.sum())

    def compute(self, stage: str, class_names: Sequence[str]) -> dict[str, float]:
        """Flat ``<stage>/...`` values: ``acc``, ``f1`` (macro: the mean of the per-class F1 over
        every class), ``n`` and ``hits`` (faces, correct ones), ``<score>_<class>`` for each of
        :data:`PER_CLASS`, and ``agree``, ``agree_hits``, ``agree_n`` when people labels were seen."""
        s = self.scores.compute()
        cm = s["cm"].double()
        support = cm.sum(1)
        out = {
            f"{stage}/acc": cm.trace() / cm.sum().clamp(min=1),
            f"{stage}/f1": s["f1"].double().mean(),
            f"{stage}/n": support.sum(),
            # Counts survive logging (Lightning logs float32): summarize divides them in float64.
            f"{stage}/hits": cm.trace(),
        }
        for i, name in enumerate(class_names):
            for key in ("precision", "recall", "f1"):
                out[f"{stage}/{key}_{name}"] = s[key][i]
            out[f"{stage}/support_{name}"] = support[i]
        if self.agree_n.update_count:
            n = self.agree_n.compute().double()
            hits = self.agree_hits.compute().double()
            out[f"{stage}/agree"], out[f"{stage}/agree_hits"], out[f"{stage}/agree_n"] = (
                hits / n.clamp(min=1),
                hits,
                n,
            )
        return {k: float(v) for k, v in out.items()}

    def confusion_matrix(self) -> np.ndarray:
        return self.scores["cm"].compute().cpu().numpy()

    def reset(self) -> None:
        self.scores.reset()
        self.agree_hits.reset()
        self.agree_n.reset()


def summarize(values: Mapping[str, Any], class_names: Sequence[str], stage: str = "test") -> dict:
    """The ``metrics.json`` summary from a stage's flat values (``StageMetrics.compute``, or what
    ``trainer.test`` returns, which logged them)."""
    v = {k: float(x) for k, x in values.items() if k.startswith(f"{stage}/")}
    n = int(v[f"{stage}/n"])
    summary = {
        "accuracy": v[f"{stage}/hits"] / max(n, 1),  # from counts: exact whatever logged them
        "n": n,
        "macro_f1": v[f"{stage}/f1"],
        "per_class": {
            name: {
                "precision": v[f"{stage}/precision_{name}"],
                "recall": v[f"{stage}/recall_{name}"],
                "f1": v[f"{stage}/f1_{name}"],
                "support": int(v[f"{stage}/support_{name}"]),
            }
            for name in class_names
        },
    }
    if f"{stage}/agree_n" in v:
        summary["agreement"] = v[f"{stage}/agree_hits"] / max(v[f"{stage}/agree_n"], 1)
        summary["agreement_n"] = int(v[f"{stage}/agree_n"])
    return summary


def score(
    preds: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    people: torch.Tensor | np.ndarray | None = None,
) -> dict:
    """The summary of predictions (N, C) for a whole split at once."""
    metrics = StageMetrics(len(class_names))
    metrics.update(preds, torch.as_tensor(labels), None if people is None else torch.as_tensor(people))
    return summarize(metrics.compute("split", class_names), class_names, "split")


def write_metrics(path: str | Path, summary: Mapping[str, Any] | None = None, **run: Any) -> Path:
    """Write ``metrics.json``: the summary's keys, then the run's (``split``, ``tta``, ``labels``,
    ``checkpoint``; ``best`` and ``epochs`` from training). The only writer of the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**(summary or {}), **run}, indent=2) + "\n")
    return path


def classification_report(summary: dict) -> str:
    """A fixed-width table like scikit-learn's classification report."""
    rows = [f"{'':>10} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, m in summary["per_class"].items():
        rows.append(f"{name:>10} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f} {m['support']:9d}")
    n = sum(m["support"] for m in summary["per_class"].values())
    pc = summary["per_class"].values()
    macro_p = np.mean([m["precision"] for m in pc])
    macro_r = np.mean([m["recall"] for m in pc])
    rows += [
        "",
        f"{'accuracy':>10} {'':>9} {'':>9} {summary['accuracy']:9.4f} {n:9d}",
        f"{'macro avg':>10} {macro_p:9.4f} {macro_r:9.4f} {summary['macro_f1']:9.4f} {n:9d}",
    ]
    return "\n".join(rows) + "\n"


def print_metrics(summary: dict, title: str) -> None:
    """Per-class precision/recall/F1 and the overall accuracy and macro-F1 as a table."""
    table = Table(title=title, title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, m in summary["per_class"].items():
        table.add_row(
            name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])
        )
    n = sum(m["support"] for m in summary["per_class"].values())
    table.add_section()
    table.add_row("accuracy", "", "", f"{summary['accuracy']:.4f}", str(n), style="bold")
    table.add_row("macro F1", "", "", f"{summary['macro_f1']:.4f}", str(n), style="bold")
    Console().print(table)


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts (left) and row-normalised recall (right) side by side."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(13, 5.5), constrained_layout=True)
    axes = fig.subplots(1, 2)
    for ax, data, fmt, sub in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalised")):
        im = ax.imshow(data, cmap="Blues")
        ax.set(
            xticks=range(len(class_names)),
            yticks=range(len(class_names)),
            xticklabels=class_names,
            yticklabels=class_names,
            xlabel="predicted",
            ylabel="true",
            title=f"{title} ({sub})".strip(),
        )
        ax.tick_params(axis="x", rotation=45)
        hi = data.max() / 2 if data.size else 0
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(
                    j,
                    i,
                    format(data[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if data[i, j] > hi else "black",
                )
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
