"""Summarise a multirun: mean ± std of every configuration's test metrics over its seeds.

    emo-summarize outputs/train/multiruns/<date>          # or python -m emo.summarize DIR
    emo-summarize DIR --ignore seed data.split_seed       # what does not define a configuration

Reads each job's ``metrics.json`` and ``.hydra/overrides.yaml``; jobs whose overrides differ only
in ``seed`` form one configuration. Prints a table (best validation score first: configurations
are compared on PublicTest, never on the PrivateTest numbers shown beside it), writes
``summary.csv`` and the bar chart ``summary.png`` into the multirun directory. An Optuna search's
``optimization_results.yaml`` is shown too.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from emo.errors import EmoError, exit_on_emo_error, prog


@dataclass
class Job:
    dir: Path
    overrides: list[str]
    metrics: dict

    @property
    def best(self) -> float | None:
        """The best validation score of the monitored metric (``None``: not recorded)."""
        values = [v for v in (self.metrics.get("best") or {}).values() if v is not None]
        return float(values[0]) if values else None


def _job_order(path: Path) -> tuple:
    # Hydra names job folders by number: 2 before 10.
    return tuple(int(p) if p.isdigit() else math.inf for p in path.parts) + (str(path),)


def collect_jobs(multirun_dir: str | Path) -> list[Job]:
    """Every job under ``multirun_dir`` that wrote a ``metrics.json``, in job order."""
    root = Path(multirun_dir)
    if not root.is_dir():
        raise EmoError(f"{root} is not a directory: give a multirun folder (outputs/train/multiruns/<date>)")
    jobs = []
    for path in sorted(root.rglob("metrics.json"), key=lambda p: _job_order(p.relative_to(root))):
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise EmoError(f"{path} is not valid JSON ({err})") from None
        if "accuracy" not in metrics:
            continue  # not an emo metrics file
        ov = path.parent / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(ov)] if ov.is_file() else []
        jobs.append(Job(path.parent, overrides, metrics))
    if not jobs:
        raise EmoError(f"no metrics.json under {root}: did the jobs finish (each writes one after testing)?")
    return jobs


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def group_jobs(
    jobs: Sequence[Job], ignore: Sequence[str] = ("seed",)
) -> tuple[dict[str, list[Job]], list[str]]:
    """Jobs by configuration: their overrides without ``ignore`` keys and without the overrides
    every job shares (returned second, to print once)."""
    kept = [[o for o in j.overrides if _key(o) not in ignore] for j in jobs]
    common = [o for o in kept[0] if all(o in k for k in kept[1:])] if len(jobs) > 1 else []
    groups: dict[str, list[Job]] = {}
    for job, overrides in zip(jobs, kept):
        name = " ".join(o for o in overrides if o not in common) or "(defaults)"
        groups.setdefault(name, []).append(job)
    return groups, common


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``nan`` for one value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan


def summary_rows(groups: dict[str, list[Job]]) -> list[dict]:
    """One row per configuration: n and mean/std of accuracy, macro-F1 and best validation score;
    best validation score first (configurations in job order when none was recorded)."""
    rows = []
    for name, jobs in groups.items():
        row = {"config": name, "n": len(jobs)}
        for col, values in (
            ("accuracy", [j.metrics["accuracy"] for j in jobs]),
            ("macro_f1", [j.metrics["macro_f1"] for j in jobs]),
            ("val_best", [j.best for j in jobs if j.best is not None]),
        ):
            row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(values) if values else (math.nan, math.nan)
        rows.append(row)
    if any(not math.isnan(r["val_best_mean"]) for r in rows):
        rows.sort(key=lambda r: -r["val_best_mean"] if not math.isnan(r["val_best_mean"]) else math.inf)
    return rows


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def print_table(rows: Sequence[dict], title: str, monitor: str = "val/acc") -> None:
    table = Table(title=title, title_justify="left")
    for col in ("configuration", "n", f"{monitor} best", "test accuracy", "test macro-F1"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        table.add_row(
            r["config"],
            str(r["n"]),
            _fmt(r["val_best_mean"], r["val_best_std"]),
            _fmt(r["accuracy_mean"], r["accuracy_std"]),
            _fmt(r["macro_f1_mean"], r["macro_f1_std"]),
        )
    Console(width=max(120, Console().width)).print(table)


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _short_label(name: str, width: int = 45) -> str:
    """A configuration's overrides for an axis label: floats to 4 significant digits, wrapped."""
    name = re.sub(r"\d+\.\d{5,}(e-?\d+)?", lambda m: f"{float(m.group()):.4g}", name)
    return textwrap.fill(name, width)


def comparison_figure(rows: Sequence[dict], title: str = "") -> Figure:
    """Test accuracy and macro-F1 per configuration as bars with ±1 std error bars."""
    names = [r["config"] for r in rows]
    y = np.arange(len(rows))
    lines = max(_short_label(n).count("\n") + 1 for n in names)
    fig = Figure(figsize=(10, 1.2 + (0.3 + 0.2 * lines) * len(rows)), constrained_layout=True)
    ax = fig.subplots()
    h = 0.38
    for off, col, label in ((-h / 2, "accuracy", "test accuracy"), (h / 2, "macro_f1", "test macro-F1")):
        means = [r[f"{col}_mean"] for r in rows]
        stds = [0.0 if math.isnan(r[f"{col}_std"]) else r[f"{col}_std"] for r in rows]
        ax.barh(y + off, means, height=h, xerr=stds, capsize=3, label=label)
    ax.set_yticks(y, [_short_label(n) for n in names], fontsize=8)
    ax.invert_yaxis()  # best (first row) on top
    ax.set(xlabel="mean ± std over seeds", xlim=(0, 1), title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def summarize_multirun(
    multirun_dir: str | Path, ignore: Sequence[str] = ("seed",), plot: bool = True
) -> list[dict]:
    """Print the table, write ``summary.csv`` (and ``summary.png``) into ``multirun_dir``; return the rows."""
    root = Path(multirun_dir)
    jobs = collect_jobs(root)
    groups, common = group_jobs(jobs, ignore)
    rows = summary_rows(groups)
    monitor = next(iter(jobs[0].metrics.get("best") or {"val/acc": None}))
    title = f"{root}: {len(jobs)} jobs, {len(rows)} configurations"
    if common:
        title += f"\ncommon to all: {' '.join(common)}"
    print_table(rows, title, monitor)
    write_csv(rows, root / "summary.csv")
    if plot:
        fig = comparison_figure(rows, root.name)
        fig.savefig(root / "summary.png", dpi=120)
    optuna = root / "optimization_results.yaml"
    if optuna.is_file():
        res = OmegaConf.load(optuna)
        if "best_params" in res:
            params = " ".join(f"{k}={v}" for k, v in res.best_params.items())
            print(f"Optuna best: {res.best_value:.4f} with {params}")
    print(f"wrote {root / 'summary.csv'}" + (f" and {root / 'summary.png'}" if plot else ""))
    return rows


@exit_on_emo_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog("emo-summarize"), description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", help="a multirun folder (outputs/train/multiruns/<date>)")
    parser.add_argument(
        "--ignore",
        nargs="+",
        default=["seed"],
        metavar="KEY",
        help="override keys that do not define a configuration (default: seed)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip summary.png")
    args = parser.parse_args(argv)
    summarize_multirun(args.multirun_dir, args.ignore, plot=not args.no_plot)


def cli() -> None:
    """Console entry point (``emo-summarize``, ``python -m emo.summarize``)."""
    main()


if __name__ == "__main__":
    cli()
