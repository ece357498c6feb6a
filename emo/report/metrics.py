"""Metric summaries and plots computed from a confusion matrix and class probabilities.

Both ``train`` (its test stage) and ``evaluate`` write ``metrics.json`` through
:func:`summarize`, so the two always agree on what ``accuracy`` and ``macro_f1`` mean.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table


def summarize(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a (C, C) count matrix.

    Rows of ``cm`` are true classes, columns predictions.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / predicted)
        recall = np.nan_to_num(tp / support)
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    per_class = {
        name: {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "n": int(cm.sum()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
    }


def agreement(probs, people) -> dict:
    """Agreement with people: accuracy against FER+ majority labels (``-1``: no majority among
    the classes, left out), and how many faces counted."""
    pred, people = np.asarray(probs).argmax(1), np.asarray(people)
    counted = people >= 0
    return {"agreement": float((pred[counted] == people[counted]).mean()), "agreement_n": int(counted.sum())}


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


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


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
