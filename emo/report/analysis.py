"""Data and results analysis behind the notebooks: class balance, duplicate and blank faces, pixel
statistics, predictions, calibration (reliability, ECE) and the most confident mistakes.

Pure functions on numpy arrays and figures, so the notebooks stay thin and this stays tested.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator, PercentFormatter

from emo.data.fer2013 import (
    FER2013_CLASSES,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
    FerArrays,
    find_source,
)
from emo.data.transforms import preprocess_faces
from emo.errors import EmoError


# ------------------------------------------------------------------------------------ data
def find_data_dir(candidates: Sequence[str | Path] = ("data/fer2013", "../data/fer2013")) -> Path | None:
    """Where FER-2013 is: ``$EMO_DATA_DIR``, ``$EMO_TEST_DATA_DIR`` or the first candidate holding
    it (relative to the working directory: the repository root or ``notebooks/``); ``None`` if absent."""
    dirs = [os.environ.get("EMO_DATA_DIR"), os.environ.get("EMO_TEST_DATA_DIR"), *candidates]
    for d in dirs:
        if not d:
            continue
        try:
            find_source(d)  # any layout emo reads
        except EmoError:
            continue
        return Path(d)
    return None


def synthetic_fer(per_class: int = 12, seed: int = 0) -> FerArrays:
    """A tiny FER-like set (noise with a class-specific bright patch) for running the notebooks
    without FER-2013. It holds one duplicated and one blank face so those checks find something."""
    rng = np.random.default_rng(seed)
    images, labels, split = [], [], []
    for code, n in ((TRAIN, per_class), (VAL, max(1, per_class // 3)), (TEST, max(1, per_class // 3))):
        for label in range(len(FER2013_CLASSES)):
            for _ in range(n):
                img = rng.integers(0, 160, size=(48, 48), dtype=np.uint8)
                r, c = divmod(label, 3)
                img[4 + 14 * r : 14 + 14 * r, 4 + 14 * c : 14 + 14 * c] = 250
                images.append(img)
                labels.append(label)
                split.append(code)
    images = np.stack(images)
    images[1] = images[0]  # an exact duplicate
    images[2] = 0  # a blank (all-black) face, as FER-2013 has a few
    return FerArrays(images, np.asarray(labels, np.int64), np.asarray(split, np.int64), "synthetic", True)


def class_counts(labels: np.ndarray, split: np.ndarray, num_classes: int = len(FER2013_CLASSES)) -> dict:
    """Faces per class in each split: ``{"train": (C,) counts, "val": ..., "test": ...}``."""
    return {
        name: np.bincount(labels[split == code], minlength=num_classes)
        for code, name in zip((TRAIN, VAL, TEST), SPLIT_NAMES)
    }


def class_balance_figure(counts: dict, class_names: Sequence[str] = FER2013_CLASSES) -> Figure:
    """Bars of each class's share per split (counts on top of the training bars)."""
    fig = Figure(figsize=(9, 4), constrained_layout=True)
    ax = fig.subplots()
    x = np.arange(len(class_names))
    w = 0.8 / len(counts)
    for i, (name, c) in enumerate(counts.items()):
        share = c / max(c.sum(), 1)
        bars = ax.bar(x + (i - (len(counts) - 1) / 2) * w, share, width=w, label=f"{name} ({c.sum():,})")
        if i == 0:
            ax.bar_label(bars, labels=[f"{v:,}" for v in c], fontsize=8)
    ax.set_xticks(x, class_names)
    ax.set(ylabel="share of the split", title="class balance")
    ax.legend()
    return fig


def sample_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] = FER2013_CLASSES,
    per_class: int = 8,
    seed: int = 0,
) -> Figure:
    """A row of ``per_class`` random faces for each class."""
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(per_class * 1.1, len(class_names) * 1.2))
    axes = fig.subplots(len(class_names), per_class, squeeze=False)
    for row, name in enumerate(class_names):
        idx = np.flatnonzero(labels == row)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(pick):
                ax.imshow(images[pick[col]], cmap="gray", vmin=0, vmax=255)
        axes[row][0].set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def duplicate_groups(images: np.ndarray) -> list[np.ndarray]:
    """Indices of faces with identical pixels, one array per group of two or more."""
    groups: dict[bytes, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(
            hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest(), []
        ).append(i)
    return [np.asarray(g) for g in groups.values() if len(g) > 1]


def blank_faces(images: np.ndarray, max_std: float = 2.0) -> np.ndarray:
    """Indices of near-uniform faces (grey-level std below ``max_std`` on 0..255): no face at all."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    return np.flatnonzero(flat.std(1) < max_std)


def pixel_stats(images: np.ndarray) -> dict:
    """Mean and std of the grey levels on the 0..1 scale (the data config's ``mean``/``std``) and
    the per-face mean and std, for histograms."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "face_mean": flat.mean(1),
        "face_std": flat.std(1),
    }


def pixel_stats_figure(images: np.ndarray) -> Figure:
    """Histograms of all grey levels, of each face's mean and of each face's contrast (std)."""
    stats = pixel_stats(images)
    fig = Figure(figsize=(13, 3.5), constrained_layout=True)
    axes = fig.subplots(1, 3)
    axes[0].hist(images.ravel(), bins=64, range=(0, 255), color="gray")
    axes[0].set(title=f"grey levels (mean {stats['mean']:.3f}, std {stats['std']:.3f})", xlabel="0..255")
    axes[1].hist(stats["face_mean"], bins=50, range=(0, 1))
    axes[1].set(title="mean brightness per face", xlabel="0..1")
    axes[2].hist(stats["face_std"], bins=50, range=(0, 0.5))
    axes[2].set(title="contrast (std) per face", xlabel="0..1")
    return fig


# --------------------------------------------------------------------------------- results
@torch.no_grad()
def predict_probs(model, images: np.ndarray, tta: str = "none", batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, C) of ``model`` (an ``EmoModule``) for uint8 faces (N, H, W),
    preprocessed as its checkpoint says."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = preprocess_faces(images[i : i + batch_size], model.preprocess).to(model.device)
        out.append(model.predict_proba(x, tta).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.class_names)), np.float32)


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict:
    """Calibration of the top-class confidence in ``n_bins`` equal-width bins.

    Returns ``confidence`` and ``accuracy`` per bin (``nan`` where empty), ``count`` per bin, the
    bin ``edges`` and ``ece``: the expected calibration error, the count-weighted mean gap
    |accuracy - confidence| (Guo et al. 2017).
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    gaps = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    ece = float((gaps * count).sum() / max(len(labels), 1))
    return {"confidence": mean_conf, "accuracy": acc, "count": count, "edges": edges, "ece": ece}


def reliability_figure(rel: dict, title: str = "") -> Figure:
    """Reliability diagram (accuracy against confidence per bin) and the confidence histogram."""
    edges, count = rel["edges"], rel["count"]
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    fig = Figure(figsize=(5.5, 6.5), constrained_layout=True)
    ax, hx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centers, np.nan_to_num(rel["accuracy"]), width=width * 0.95, edgecolor="k", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"reliability {title} (ECE {rel['ece']:.3f})")
    ax.legend(loc="upper left")
    hx.bar(centers, count, width=width * 0.95, color="gray")
    hx.set(xlabel="confidence (top-class probability)", ylabel="faces")
    return fig


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the ``k`` wrong predictions made with the highest confidence, most confident first."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    order = np.argsort(-probs[wrong].max(1), kind="stable")
    return wrong[order[:k]]


def mistakes_figure(
    images: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray,
    class_names: Sequence[str],
    cols: int = 8,
) -> Figure:
    """The faces ``idx`` titled with the prediction (confidence) and the true label."""
    rows = max(1, -(-len(idx) // cols))
    fig = Figure(figsize=(cols * 1.5, rows * 1.8))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        p = probs[i]
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{class_names[p.argmax()]} {p.max():.0%}\ntrue: {class_names[labels[i]]}", fontsize=8)
    fig.tight_layout()
    return fig


def two_yardsticks(pred: np.ndarray, labels: np.ndarray, people: np.ndarray) -> dict:
    """Where a model's FER-2013 accuracy and its agreement with people come from.

    ``pred``, ``labels``: predicted and FER-2013 classes (N,); ``people``: the FER+ majority in the
    same classes, ``-1`` where it is none of them (such faces count for accuracy only). Faces
    counted for agreement split into *same* (the two labels agree: one answer scores on both
    yardsticks) and *diff* (they differ: an answer scores on one at most). Returns the counts,
    ``accuracy``, ``agreement``, ``on_same`` (accuracy on same faces), and on diff faces the share
    answered as FER-2013 (``diff_fer``), as people (``diff_people``) or as neither.
    """
    pred, labels, people = (np.asarray(a) for a in (pred, labels, people))
    counted = people >= 0
    same, diff = counted & (people == labels), counted & (people != labels)
    n_same, n_diff = int(same.sum()), int(diff.sum())
    diff_fer = float((pred[diff] == labels[diff]).mean()) if n_diff else 0.0
    diff_people = float((pred[diff] == people[diff]).mean()) if n_diff else 0.0
    return {
        "n": len(labels),
        "n_counted": int(counted.sum()),
        "n_same": n_same,
        "n_diff": n_diff,
        "accuracy": float((pred == labels).mean()),
        "agreement": float((pred[counted] == people[counted]).mean()) if counted.any() else 0.0,
        "on_same": float((pred[same] == labels[same]).mean()) if n_same else 0.0,
        "diff_fer": diff_fer,
        "diff_people": diff_people,
        "diff_neither": 1.0 - diff_fer - diff_people,
    }


def on_same_needed(split: dict, accuracy: float, agreement: float, diff_neither: float = 0.0) -> float:
    """The accuracy on same faces (:func:`two_yardsticks`) that ``accuracy`` and ``agreement``
    together need at best, when a share ``diff_neither`` of the diff faces is answered as neither
    label and the rest is split between the two as well as can be, and every face that counts for
    accuracy only is right. Above 1: out of reach.

    From acc·n <= same·c + fer·diff + (n - counted) and agree·counted <= same·c + people·diff with
    fer + people = 1 - diff_neither: c >= (acc·n + agree·counted - (n - counted) -
    (1 - diff_neither)·diff) / (2·same).
    """
    s = split
    return (
        accuracy * s["n"]
        + agreement * s["n_counted"]
        - (s["n"] - s["n_counted"])
        - (1 - diff_neither) * s["n_diff"]
    ) / (2 * s["n_same"])


def reachable_agreement(split: dict, accuracy: np.ndarray, on_same: float) -> np.ndarray:
    """The most agreement a model with accuracy ``on_same`` on same faces can have at each FER-2013
    ``accuracy`` (the bound of :func:`on_same_needed` solved for agreement: no diff face answered
    as neither, every face that counts for accuracy only right); ``nan`` where even every diff
    face answered as FER-2013 does not reach that accuracy."""
    s = split
    acc = np.asarray(accuracy, dtype=float)
    right_anyway = s["n_same"] * on_same
    agree = (2 * right_anyway + s["n_diff"] + (s["n"] - s["n_counted"]) - acc * s["n"]) / s["n_counted"]
    ceiling = (right_anyway + s["n_diff"]) / s["n_counted"]  # every diff face answered as people
    feasible = acc * s["n"] <= right_anyway + s["n_diff"] + (s["n"] - s["n_counted"])
    return np.where(feasible, np.minimum(agree, ceiling), np.nan)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points (N, 2) that no other point matches or beats on both coordinates
    while beating on one, by the first coordinate."""
    pts = np.asarray(points, dtype=float)
    keep = [i for i, p in enumerate(pts) if not np.any(np.all(pts >= p, axis=1) & np.any(pts > p, axis=1))]
    return np.array(sorted(keep, key=lambda i: pts[i, 0]), dtype=int)


def yardsticks_figure(
    rows: Sequence[tuple[str, dict]],
    bar_accuracy: float,
    bar_agreement: float,
    title: str = "",
    label: Sequence[str] = (),
) -> Figure:
    """Each model's FER-2013 accuracy against its agreement with people (``rows``: a name and its
    :func:`two_yardsticks` split, all on the same faces): the bar's corner shaded, the models no
    other beats on both yardsticks joined and named (and those in ``label``), and the most
    agreement reachable at each accuracy at the best same-face accuracy among the models."""
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    ax = fig.subplots()
    acc = np.array([s["accuracy"] for _, s in rows])
    agree = np.array([s["agreement"] for _, s in rows])
    lo_x, hi_x = min(acc.min(), bar_accuracy) - 0.02, max(acc.max(), bar_accuracy) + 0.02
    lo_y, hi_y = min(agree.min(), bar_agreement) - 0.02, max(agree.max(), bar_agreement) + 0.03
    best_name, best = max(rows, key=lambda r: r[1]["on_same"])
    grid = np.linspace(lo_x, hi_x, 200)
    ax.plot(
        grid,
        reachable_agreement(best, grid, best["on_same"]),
        "--",
        color="grey",
        label=f"the most reachable at {best_name}'s accuracy on faces whose labels agree ({best['on_same']:.1%})",
    )
    ax.fill_between(
        [bar_accuracy, hi_x],
        bar_agreement,
        hi_y,
        color="tab:green",
        alpha=0.15,
        label=f"bar: >= {bar_accuracy:.0%} FER-2013 and >= {bar_agreement:.0%} agreement",
    )
    front = pareto_front(np.stack([acc, agree], 1))
    ax.scatter(acc, agree, color="tab:blue", alpha=0.45, zorder=3, label="a model")
    ax.plot(
        acc[front], agree[front], "o-", color="tab:blue", zorder=4, label="no other model beats it on both"
    )
    names = [name for name, _ in rows]
    placed: list[tuple[float, float]] = []
    for i in sorted(set(front) | {names.index(n) for n in label if n in names}, key=lambda i: -agree[i]):
        # A label next to one already placed (points within ~0.6 points) goes a line lower.
        near = sum(abs(acc[i] - x) < 0.006 and abs(agree[i] - y) < 0.006 for x, y in placed)
        placed.append((acc[i], agree[i]))
        ax.annotate(
            names[i], (acc[i], agree[i]), xytext=(5, 3 - 10 * near), textcoords="offset points", fontsize=8
        )
    ax.set(
        xlim=(lo_x, hi_x),
        ylim=(lo_y, hi_y),
        xlabel="FER-2013 accuracy (the leaderboard)",
        ylabel="agreement with people (FER+ majority)",
        title=title or "the two yardsticks",
    )
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MultipleLocator(0.02))
        axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return fig
