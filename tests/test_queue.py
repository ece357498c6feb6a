"""The training queue: every queued command composes today, resumability is judged in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import time

import pytest
import torch

from emo.cli import instantiate
from emo.data.fer2013 import FER2013_CLASSES
from emo.data.ferplus import FERPLUS_CLASSES
from emo.models.pack import pack
from emo.paths import PACKAGE_DIR

ROOT = PACKAGE_DIR.parent
spec = importlib.util.spec_from_file_location("train_queue", ROOT / "research" / "train_queue.py")
train_queue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_queue)


@pytest.mark.parametrize("entry", train_queue.load_queue(), ids=lambda e: e["name"])
def test_every_queued_command_composes_and_its_resume_point_fits(entry, make_cfg, tmp_path):
    overrides = shlex.split(entry["command"])[3:]
    cfg = make_cfg(*overrides, out_dir=tmp_path)
    assert cfg.trainer.max_epochs > 0 and entry.get("why")
    classes = FERPLUS_CLASSES if cfg.data.labels == "ferplus" else FER2013_CLASSES
    model = instantiate(cfg.model, class_names=classes)
    resume = ROOT / "runs" / entry["name"] / "resume.ckpt"
    if resume.is_file():  # what the queue resumes from (ckpt_path=): today's network must take it
        assert train_queue.resumable(resume) is None
        model.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True)["state_dict"])


def test_resumable_accepts_a_last_ckpt_and_explains_what_it_refuses(trained_run, tmp_path):
    last = trained_run[0] / "checkpoints" / "last.ckpt"
    assert train_queue.resumable(last) is None and train_queue.epoch_of(last) == 2
    slim = pack(last, tmp_path / "slim.ckpt")
    assert train_queue.resumable(slim) == "it holds weights only (no optimizer or loop state)"
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert "unreadable" in train_queue.resumable(tmp_path / "junk.ckpt")


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_lean_resume_point_is_small_and_training_goes_on_from_it(optimizer, make_cfg, tmp_path):
    from emo.train import train

    common = [
        "data.batch_size=32",
        "~logger",
        "test=false",
        "callbacks.ema.decay=0.9",
        f"optimizer={optimizer}",
    ]
    train(make_cfg("trainer.max_epochs=1", *common, out_dir=tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    lean = train_queue.lean_resume(last, tmp_path / "lean.ckpt")
    # fp32 weights, their average and Adam's 2 moments (4 copies) -> fp16 weights and moments (1.5);
    # with SGD, weights, average and momentum (3) -> fp16 weights (0.5)
    assert lean.stat().st_size < (0.4 if optimizer == "adam" else 0.2) * last.stat().st_size
    assert train_queue.resumable(lean) is None and train_queue.epoch_of(lean) == 1
    full, small = (torch.load(p, map_location="cpu", weights_only=True) for p in (last, lean))
    assert "current_model_state" not in small and "averaging_state" not in small
    for name, value in full["current_model_state"].items():  # the live weights, not their average
        assert small["state_dict"][name].dtype == (
            torch.float16 if value.is_floating_point() else value.dtype
        )
        assert torch.allclose(small["state_dict"][name].to(value.dtype), value, rtol=1e-3, atol=1e-4)
    states = zip(
        full["optimizer_states"][0]["state"].values(), small["optimizer_states"][0]["state"].values()
    )
    for state, small_state in states:
        if optimizer == "adam":
            assert small_state["exp_avg"].dtype == torch.float16 and small_state["step"] == state["step"]
            assert torch.allclose(small_state["exp_avg"].float(), state["exp_avg"], rtol=1e-3, atol=1e-6)
        else:
            assert "momentum_buffer" in state and "momentum_buffer" not in small_state
    train(make_cfg("trainer.max_epochs=2", *common, f"ckpt_path={lean}", out_dir=tmp_path / "resumed"))
    assert train_queue.epoch_of(tmp_path / "resumed" / "checkpoints" / "last.ckpt") == 2  # one more epoch


def test_the_queue_does_not_start_without_the_data_its_runs_read(tmp_path, monkeypatch):
    monkeypatch.setattr(train_queue, "DATA_DIR", str(tmp_path / "missing"))
    for name, value in [
        ("QUEUE_DIR", tmp_path),
        ("PID_FILE", tmp_path / "runner.pid"),
        ("LOG_FILE", tmp_path / "q.log"),
    ]:
        monkeypatch.setattr(train_queue, name, value)
    with pytest.raises(
        SystemExit, match="the queue was not started: FER-2013 not found in .*missing.*EMO_DATA_DIR"
    ):
        train_queue.start()
    assert not (tmp_path / "runner.pid").exists() and not (tmp_path / "q.log").exists()


def test_held_runs_wait_and_the_queue_goes_on_past_them(monkeypatch):
    entries = [
        {"name": "a", "command": "python -m emo.train x=1", "hold": "decided by b's result"},
        {"name": "b", "command": "python -m emo.train x=2"},
    ]
    done, trained = set(), []

    def fake_train(entry):
        trained.append(entry["name"])
        done.add(entry["name"])
        return True

    monkeypatch.setattr(train_queue, "load_queue", lambda: entries)
    monkeypatch.setattr(train_queue, "is_done", lambda name: name in done)
    monkeypatch.setattr(train_queue, "train", fake_train)
    monkeypatch.setattr(train_queue, "finish", lambda entry, commit: None)
    train_queue.run_queue(commit=False)
    assert trained == ["b"]
    del entries[0]["hold"]  # the line deleted: the next pass runs it
    train_queue.run_queue(commit=False)
    assert trained == ["b", "a"]


def test_a_runs_time_adds_up_over_attempts_and_counts_the_one_in_progress(tmp_path):
    timing = tmp_path / "queue_time.json"
    assert train_queue.wall_so_far(timing) == 0.0
    timing.write_text('{"wall_s": 100.0}')
    assert train_queue.wall_so_far(timing) == 100.0
    timing.write_text(f'{{"wall_s": 100.0, "since": {time.time() - 50}}}')  # started 50 s ago
    assert 150.0 <= train_queue.wall_so_far(timing) < 160.0


def test_status_tells_the_pace_of_the_attempt_in_progress(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / ".hydra").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"epoch": 11}, last)  # 12 epochs done
    start = time.time() - 3600
    timing = tmp_path / "queue_time.json"
    timing.write_text(json.dumps({"wall_s": 0, "since": start, "since_epoch": 10}))
    os.utime(last, (start + 600, start + 600))  # two epochs in 10 minutes
    assert train_queue.pace(tmp_path) == "5.0 min an epoch here"
    (tmp_path / ".hydra" / "config.yaml").write_text("trainer:\n  max_epochs: 70\n")
    assert train_queue.pace(tmp_path) == "5.0 min an epoch here, ~4.8 h to go"  # 58 x 5 min
    timing.write_text(json.dumps({"wall_s": 0, "since": start, "since_epoch": 12}))
    assert train_queue.pace(tmp_path) == ""  # no epoch saved since the attempt started
    timing.write_text(json.dumps({"wall_s": 700}))
    assert train_queue.pace(tmp_path) == ""  # not training


def test_a_people_run_takes_the_tta_that_agrees_best_at_70_percent():
    q = train_queue
    val = {  # vgg_s_people_cb04's PublicTest scores
        "none": {"accuracy": 0.7041, "agreement": 0.6945},
        "flip": {"accuracy": 0.7033, "agreement": 0.6988},
    }
    assert q.choose_tta(val, {"val/acc": 0.70}) == "none"  # a FER-2013 run: accuracy
    assert q.choose_tta(val, {"val/agree_ok": 0.70}) == "flip"  # a people run: agreement...
    assert q.choose_tta(val, {"val/agree_ok": 0.70}, min_acc=0.704) == "none"  # ...at >= min_acc


def test_committing_an_unchanged_run_returns_at_once(tmp_path, monkeypatch):
    import subprocess

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=tmp_path, check=True)
    monkeypatch.setattr(train_queue, "ROOT", tmp_path)
    monkeypatch.setattr(train_queue.time, "sleep", lambda s: pytest.fail("retried a commit with nothing new"))
    train_queue.git_commit(run, "again")  # nothing new under runs/r


@pytest.mark.parametrize("stopped", [False, True])
def test_one_run_is_finished_only_when_its_training_ran_to_the_end(stopped, monkeypatch):
    """`one` (research/gpu_queue.sh): a run stopped at the time budget keeps its last.ckpt and is not
    scored, even when Lightning ends the SIGTERMed fit with status 0."""
    finished = []
    monkeypatch.setattr(train_queue, "is_done", lambda name: False)
    monkeypatch.setattr(train_queue, "train", lambda entry: True)
    monkeypatch.setattr(train_queue, "finish", lambda entry, commit: finished.append(entry["name"]))
    monkeypatch.setattr(train_queue, "STOPPING", [None] if stopped else [])
    ok = train_queue.run_one({"name": "r", "command": "python -m emo.train x=1"}, commit=False)
    assert ok is not stopped and finished == ([] if stopped else ["r"])


def test_a_run_trained_elsewhere_is_finished_from_its_last_epoch(trained_run, fer_dir, tmp_path, monkeypatch):
    """A run whose best epoch's file stayed on the GPU machine that trained it (only last.ckpt came
    back) is scored and packed from last.ckpt, and result.json says so and names the device."""

    queue, runs = tmp_path / "queue", tmp_path / "runs"
    ckpts = queue / "r" / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copy2(trained_run[0] / "checkpoints" / "last.ckpt", ckpts / "last.ckpt")
    gone = "/elsewhere/r/checkpoints/best-epoch001-acc0.5.ckpt"
    (queue / "r" / "metrics.json").write_text(
        json.dumps({"checkpoint": gone, "best": {"val/acc": 0.5}, "epochs": 2})
    )
    (queue / "r" / "queue_time.json").write_text('{"wall_s": 60, "devices": ["NVIDIA H100 80GB HBM3"]}')
    monkeypatch.setattr(train_queue, "QUEUE_DIR", queue)
    monkeypatch.setattr(train_queue, "RUNS", runs)
    monkeypatch.setattr(train_queue, "DATA_DIR", str(fer_dir))
    result = train_queue.finish({"name": "r", "command": "python -m emo.train x=1"}, commit=False)
    assert result["scored"] == "last" and result["best_epoch"] == 1  # two epochs: the last is 1
    assert result["device"] == "NVIDIA H100 80GB HBM3" and result["wall_hours"] == round(60 / 3600, 2)
    assert {p.name for p in (runs / "r").iterdir()} == {
        "r.ckpt",
        "train_probs.pt",
        "val_probs.pt",
        "result.json",
    }
    assert json.loads((runs / "r" / "result.json").read_text())["publictest"]["flip"]["accuracy"] > 0
