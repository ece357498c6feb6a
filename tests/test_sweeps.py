"""Sweeps and scaling out through Hydra's plugins and Lightning's strategies, on synthetic data.

The launches run ``python -m emo.train`` in a subprocess, as a user would, with ``debug=fdr``:
slow tests (tens of seconds each); the configs and one-line errors are checked in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import emo.cli
from emo.cli import check_group_choices, check_plugins
from emo.errors import EmoError
from emo.paths import CONF_DIR
from emo.report.summarize import summarize_multirun
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def fdr_args(fer_dir: Path) -> list[str]:
    return [f"data.data_dir={fer_dir}", "debug=fdr", "callbacks.progress_bar=null"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def hydra_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


@pytest.mark.slow
def test_seed_sweep_with_joblib_launcher_then_summarize(tmp_path, fer_dir, capsys):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", "emo.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",
        *fdr_args(fer_dir), f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, seed in zip(jobs, (1, 2)):
        assert (job / "metrics.json").is_file()
        assert f"seed: {seed}" in (job / ".hydra" / "config.yaml").read_text()
    rows = summarize_multirun(sweep)
    assert len(rows) == 1 and rows[0]["n"] == 2  # seeds of one configuration
    assert "± " in capsys.readouterr().out and (sweep / "summary.png").is_file()


@pytest.mark.slow
def test_optuna_search_two_trials(tmp_path, fer_dir):
    sweep = tmp_path / "search"
    proc = run_cli(
        "-m", "emo.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        *fdr_args(fer_dir), f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    values = []
    for job in jobs:
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        sampled = dict(o.split("=", 1) for o in overrides)
        assert {"optimizer.lr", "optimizer.weight_decay", "data.batch_size"} <= sampled.keys()
        assert {"model.net_kwargs.dropout", "augment"} <= sampled.keys()
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        # The sampled values reached the run: the augment choice fills data.augment.
        assert cfg.data.augment.name == sampled["augment"] in {"light", "strong"}
        assert cfg.optimizer.lr == pytest.approx(float(sampled["optimizer.lr"]))
        assert 1e-4 <= cfg.optimizer.lr <= 3e-3 and cfg.data.batch_size in (32, 64, 128)
        metrics = json.loads((job / "metrics.json").read_text())
        values.append(metrics["best"]["val/acc"])
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(max(values))  # maximised val/acc_best
    assert set(results.best_params) == {
        "optimizer.lr", "optimizer.weight_decay", "data.batch_size", "model.net_kwargs.dropout", "augment"
    }  # fmt: skip


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path, fer_dir):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", "emo.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        "optimizer.lr=1e-3,3e-4", *fdr_args(fer_dir), f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and all((j / "metrics.json").is_file() for j in jobs)
    assert any((sweep / ".submitit").rglob("*_result.pkl"))  # submitit ran the jobs


@pytest.mark.slow
def test_ddp_on_cpu_two_processes(tmp_path, fer_dir):
    run = tmp_path / "ddp"
    proc = run_cli(
        "-m", "emo.train", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
        "data.device_augment=true", *fdr_args(fer_dir), f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 28  # each process tested half; the confusion matrix is summed over both


def test_scaling_configs_compose():
    cfg = hydra_cfg("hparams_search=optuna", "hydra/launcher=slurm", "trainer=ddp")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.storage is None
    assert cfg.hydra.mode.name == "MULTIRUN"
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition and launcher.timeout_min > 0 and launcher.gpus_per_node >= 1
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 1
    assert cfg.trainer.max_epochs == hydra_cfg().trainer.max_epochs  # ddp extends the default trainer
    assert hydra_cfg("hydra/launcher=submitit_slurm").hydra.launcher._target_.endswith("SlurmLauncher")


def test_unknown_search_and_missing_plugins_are_emo_errors(monkeypatch):
    with pytest.raises(EmoError, match="^unknown hparams_search 'grid': choose one of optuna$"):
        check_group_choices(["hparams_search=grid"], CONF_DIR)
    check_group_choices(["hparams_search=optuna", "trainer=ddp", "hydra/launcher=joblib"], CONF_DIR)
    check_plugins(["hparams_search=optuna", "hydra/launcher=slurm"])  # installed here
    monkeypatch.setattr(emo.cli, "_importable", lambda module: False)
    with pytest.raises(
        EmoError, match=r"hydra/launcher=joblib needs a Hydra plugin: pip install 'emo\[sweeps\]'"
    ):
        check_plugins(["seed=1,2", "hydra/launcher=joblib"])
    check_plugins(["hydra/launcher=basic", "trainer=ddp"])  # Hydra's own: nothing to install
