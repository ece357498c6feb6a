"""emo-summarize on fabricated multirun directories (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from emo.errors import EmoError
from emo.report.summarize import collect_jobs, group_jobs, main, summarize_multirun

ROOT = Path(__file__).resolve().parents[1]


def fake_job(root: Path, num: int, overrides: list[str], acc: float, f1: float, best: float | None) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    metrics = {"accuracy": acc, "macro_f1": f1, "per_class": {}, "split": "test", "tta": "none"}
    metrics["best"] = {"val/acc": best}
    (job / "metrics.json").write_text(json.dumps(metrics))
    return job


@pytest.fixture
def multirun(tmp_path) -> Path:
    """experiment=a,b x seed=1,2,3 (job 4 never finished), plus an override shared by all."""
    root = tmp_path / "multirun"
    results = {  # (experiment, seed): (test acc, test macro-F1, val best)
        ("a", 1): (0.60, 0.50, 0.58),
        ("a", 2): (0.62, 0.52, 0.60),
        ("a", 3): (0.64, 0.54, 0.62),
        ("b", 1): (0.70, 0.61, 0.70),
        ("b", 3): (0.72, 0.63, 0.72),
    }
    for num, ((exp, seed), (acc, f1, best)) in enumerate(results.items()):
        overrides = [f"seed={seed}", f"experiment={exp}", "debug=limit"]
        fake_job(root, num if num < 4 else num + 1, overrides, acc, f1, best)
    (root / "4" / ".hydra").mkdir(parents=True)  # a job that crashed: no metrics.json
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_groups_by_overrides_without_seed(multirun):
    jobs = collect_jobs(multirun)
    assert [j.dir.name for j in jobs] == ["0", "1", "2", "3", "5"]
    groups, common = group_jobs(jobs)
    assert common == ["debug=limit"]
    assert {k: len(v) for k, v in groups.items()} == {"experiment=a": 3, "experiment=b": 2}
    groups, _ = group_jobs(jobs, ignore=())  # seed defines the configuration now
    assert len(groups) == 5


def test_mean_std_table_csv_and_plot(multirun, capsys):
    rows = summarize_multirun(multirun)
    assert [r["config"] for r in rows] == ["experiment=b", "experiment=a"]  # best val first
    b, a = rows
    assert a["n"] == 3 and a["accuracy_mean"] == pytest.approx(0.62)
    assert a["accuracy_std"] == pytest.approx(0.02)  # sample std of 0.60, 0.62, 0.64
    assert a["macro_f1_mean"] == pytest.approx(0.52) and a["val_best_mean"] == pytest.approx(0.60)
    assert b["n"] == 2 and b["accuracy_std"] == pytest.approx(math.sqrt(2e-4))
    out = capsys.readouterr().out
    assert "0.6200 ± 0.0200" in out and "experiment=a" in out and "debug=limit" in out
    with open(multirun / "summary.csv") as f:
        assert [r["config"] for r in csv.DictReader(f)] == ["experiment=b", "experiment=a"]
    assert (multirun / "summary.png").stat().st_size > 5000


def test_single_jobs_and_missing_val_score(tmp_path, capsys):
    root = tmp_path / "m"
    fake_job(root, 0, ["optimizer.lr=0.001"], 0.5, 0.4, None)
    fake_job(root, 1, ["optimizer.lr=0.0003"], 0.6, 0.5, None)
    (root / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  optimizer.lr: 0.0003\nbest_value: 0.61\n"
    )
    rows = summarize_multirun(root, plot=False)
    assert [r["config"] for r in rows] == ["optimizer.lr=0.001", "optimizer.lr=0.0003"]  # job order
    assert math.isnan(rows[0]["accuracy_std"]) and math.isnan(rows[0]["val_best_mean"])
    out = capsys.readouterr().out
    assert "Optuna best: 0.6100 with optimizer.lr=0.0003" in out
    assert not (root / "summary.png").exists()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "absent", "is not a directory"),
        (lambda p: p, "no metrics.json under"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, make, expected):
    with pytest.raises(SystemExit) as exit_:
        main([str(make(tmp_path))])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    assert err.startswith("error: ") and expected in err
    assert len(err.strip().splitlines()) == 1


def test_bad_json_is_an_emo_error(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text("{")
    with pytest.raises(EmoError, match="not valid JSON"):
        collect_jobs(tmp_path)
