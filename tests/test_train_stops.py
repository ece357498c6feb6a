"""Training stops safely: SIGTERM and SIGINT save a checkpoint at the next step and say how to
resume (which continues the epoch exactly where it stopped); data without a split and mistyped
numbers fail in one line before anything is trained."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from torch.utils.data import RandomSampler

from emo.cli import VALUE_RULES, check_values, compose, group_options
from emo.data.resumable import ResumableLoader, ResumableShuffle
from emo.errors import EmoError
from emo.evaluate import evaluate
from emo.models.stopping import TrainingStopped
from emo.train import train
from tests.helpers import ROOT, run_cli, synthetic_rows, write_csv


class SignalAt(Callback):
    """Sends this process ``signum`` at the end of training step ``step`` (``times`` times): a
    signal at an exact, reproducible place."""

    def __init__(self, step: int, signum: int = signal.SIGTERM, times: int = 1):
        self.step, self.signum, self.times = step, signum, times

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


def with_signal(cfg, step: int, signum: int = signal.SIGTERM, times: int = 1):
    with open_dict(cfg):
        cfg.callbacks.signal_at = {
            "_target_": f"{__name__}.SignalAt",
            "step": step,
            "signum": int(signum),
            "times": times,
        }
    return cfg


def saved(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


#: Six steps of four faces (a short epoch), nothing random but the order of the faces: two runs
#: that see the same batches end with the same weights.
EXACT = [
    "trainer.max_epochs=1",
    "data.batch_size=4",
    "+trainer.limit_train_batches=6",
    "+trainer.limit_val_batches=1",
    "+trainer.num_sanity_val_steps=0",
    "augment=none",
    "model.net_kwargs.dropout=0",
    "test=false",
    "~logger",
]
#: Short epochs of three steps, for the tests that only look at where a run stops.
SHORT = [
    "data.batch_size=4",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=1",
    "+trainer.num_sanity_val_steps=0",
    "~logger",
]


# ------------------------------------------------------------------------------------ signals
def test_sigterm_mid_epoch_saves_where_it_stopped_and_resumes_exactly(make_cfg, tmp_path):
    plain = tmp_path / "plain"
    train(make_cfg(*EXACT, out_dir=plain))

    stopped = tmp_path / "stopped"
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    with pytest.raises(TrainingStopped) as err:
        train(with_signal(make_cfg(*EXACT, out_dir=stopped), step=2))
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers  # given back
    last = stopped / "checkpoints" / "last.ckpt"
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "training stopped by SIGTERM at epoch 0, step 2: resume with python -m emo.train "
    )
    assert message.endswith(f"hydra.run.dir={stopped} ckpt_path={last}")

    state = saved(last)
    assert state["global_step"] == 2 and state["epoch"] == 0
    progress = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert (
        progress["ready"] == 2
        and not state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"]
    )
    assert (
        state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 2
    )  # the place in the epoch
    written = json.loads((stopped / "metrics.json").read_text())
    assert written["interrupted"] == {
        "signal": "SIGTERM",
        "epoch": 0,
        "step": 2,
        "checkpoint": str(last),
        "resume": message.split("resume with ")[1],
    }
    assert "last" in written and "accuracy" not in written
    assert not list((stopped / "checkpoints").glob("*.tmp"))

    with warnings.catch_warnings(record=True) as warned:  # Lightning warns if the loader cannot resume
        warnings.simplefilter("always")
        train(make_cfg(*EXACT, f"ckpt_path={last}", out_dir=stopped))
    assert not [w for w in warned if "not resumable" in str(w.message)]
    resumed, uninterrupted = saved(last), saved(plain / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == uninterrupted["global_step"] == 6
    for key, value in uninterrupted["state_dict"].items():  # the same batches, the same weights
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert "interrupted" not in json.loads((stopped / "metrics.json").read_text())


def test_a_signal_in_an_epochs_last_step_lets_the_epoch_end(make_cfg, tmp_path):
    """A run resumed from an epoch's last step would skip the epoch's validation and learning-rate
    step: the run stops one step into the next epoch instead, the epoch's checkpoints kept; in the
    last epoch, training ends and the test is left to ``emo evaluate``."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingStopped, match="by SIGTERM at epoch 1, step 4: resume with"):
        train(with_signal(make_cfg(*SHORT, "trainer.max_epochs=2"), step=3))
    assert list((tmp_path / "checkpoints").glob("best-epoch000-*.ckpt"))
    state = saved(last)
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
    assert state["lr_schedulers"][0]["last_epoch"] == 1  # the epoch's learning-rate step was taken

    with pytest.raises(TrainingStopped) as err:  # resumed, and stopped in the last epoch's last step
        train(with_signal(make_cfg(*SHORT, "trainer.max_epochs=2", f"ckpt_path={last}"), step=6))
    best = next((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert str(err.value) == (
        "training ended (epoch 2, step 6) but SIGTERM stopped it before its test: "
        f"test it with python -m emo.evaluate ckpt_path={best}"
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["interrupted"]["test"].endswith(str(best)) and "accuracy" not in written
    assert written["best"]["val/acc"] is not None  # both epochs were validated


def test_ctrl_c_stops_at_the_next_step_and_twice_at_once(make_cfg, tmp_path):
    # As at a terminal: a job started in the background of a script (CI's, often) inherits an
    # ignored SIGINT, which training rightly leaves ignored.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            _ctrl_c(make_cfg, tmp_path)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        _ctrl_c(make_cfg, tmp_path)


def _ctrl_c(make_cfg, tmp_path):
    with pytest.raises(TrainingStopped, match="by SIGINT at epoch 0, step 1: resume with"):
        train(with_signal(make_cfg(*SHORT, out_dir=tmp_path / "a"), 1, signal.SIGINT))
    assert saved(tmp_path / "a" / "checkpoints" / "last.ckpt")["global_step"] == 1

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stop:  # Lightning's own handling of a KeyboardInterrupt
        train(with_signal(make_cfg(*SHORT, out_dir=tmp_path / "b"), 1, signal.SIGINT, times=2))
    assert stop.value.code == 1
    assert not (tmp_path / "b" / "checkpoints" / "last.ckpt").exists()
    assert signal.getsignal(signal.SIGINT) is handler


def test_the_shuffle_is_torchs_and_resumes_part_way():
    data = list(range(50))
    torch.manual_seed(3)
    expected = [list(RandomSampler(data)) for _ in range(2)]
    torch.manual_seed(3)
    sampler = ResumableShuffle(data)
    assert [list(sampler) for _ in range(2)] == expected  # draw for draw: runs keep their batches

    loader = ResumableLoader(data, batch_size=8, sampler=sampler)
    first = [b.tolist() for b in loader]
    loader.batches_done = lambda: 3
    state = loader.state_dict()
    again = ResumableLoader(data, batch_size=8, sampler=ResumableShuffle(data))
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == first[3:]  # the rest of that epoch
    assert len([b for b in again]) == 7  # then whole epochs again
    assert ResumableLoader(data, batch_size=8).state_dict() == {}  # nothing to keep unshuffled


# ------------------------------------------------------------------------------ data splits
@pytest.fixture(scope="module")
def split_dirs(tmp_path_factory):
    """FER-format CSVs each missing something: a split, or every row's Usage."""
    rows, root = synthetic_rows(), tmp_path_factory.mktemp("splits")
    cases = {
        "no_val": [r for r in rows if r[2] != "PublicTest"],
        "no_test": [r for r in rows if r[2] != "PrivateTest"],
        "no_train": [r for r in rows if r[2] != "Training"],
    }
    for name, kept in cases.items():
        write_csv(root / name / "fer2013.csv", kept)
    return root


@pytest.mark.parametrize(
    ("case", "overrides", "expected"),
    [
        ("no_val", [], "no PublicTest faces, so no validation split (found Training 84, PrivateTest 28)"),
        ("no_test", [], "no PrivateTest faces, so no test split (found Training 84, PublicTest 28)"),
        ("no_train", ["test=false"], "no Training faces, so no training split"),
    ],
)
def test_a_missing_split_fails_before_training(split_dirs, tmp_path, case, overrides, expected):
    cfg = compose([f"data.data_dir={split_dirs / case}", "trainer.accelerator=cpu", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(EmoError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message and expected in message, message
    assert "Usage column must mark rows Training, PublicTest and PrivateTest" in message
    assert not (tmp_path / "checkpoints").exists()  # nothing was built, let alone trained


def test_without_a_test_split_training_without_testing_works(split_dirs, make_cfg, tmp_path):
    cfg = make_cfg("debug=fdr", "test=false")
    with open_dict(cfg):
        cfg.data.data_dir = str(split_dirs / "no_test")
    assert "train/loss" in train(cfg)


def test_evaluate_names_the_missing_split(split_dirs, make_cfg):
    bundled = ROOT / "emo" / "weights" / "cnn3.ckpt"
    for case, split, usage in (("no_test", "test", "PrivateTest"), ("no_val", "val", "PublicTest")):
        cfg = make_cfg(f"ckpt_path={bundled}", f"split={split}", config_name="evaluate")
        with open_dict(cfg):
            cfg.data.data_dir = str(split_dirs / case)
        with pytest.raises(EmoError, match=f"no {usage} faces"):
            evaluate(cfg)


def test_image_folders_without_validation_images_say_how_to_get_a_split(tmp_path):
    import cv2

    from emo.data import FER2013DataModule

    for i, (label, img, usage) in enumerate(synthetic_rows()):
        if usage != "PublicTest":
            top = "train" if usage == "Training" else "test"
            path = tmp_path / top / ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")[label]
            path.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path / f"{usage}_{i}.png"), img)
    dm = FER2013DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(
        EmoError, match=r"no PublicTest faces.*drop the Training_/PrivateTest_ prefixes.*data.val_fraction"
    ):
        dm.check_splits("train", "val")


# ------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': give a whole number >= 1 (-1: no limit)"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: give a whole number >= 1 (-1: no limit)"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: give a whole number >= 1"),
        ("trainer.max_epochs=true", "trainer.max_epochs=True: give a whole number >= 1"),
        ("+trainer.max_steps=-5", "trainer.max_steps=-5: give a whole number >= 1 (-1: no limit)"),
        ("data.batch_size=0", "data.batch_size=0: give a whole number >= 1"),
        ("data.batch_size=sixty", "data.batch_size='sixty': give a whole number >= 1"),
        ("data.num_workers=-1", "data.num_workers=-1: give a whole number >= 0"),
        ("optimizer.lr=abc", "optimizer.lr='abc': give a number > 0"),
        ("optimizer.lr=0", "optimizer.lr=0: give a number > 0"),
        ("optimizer.lr=nan", "optimizer.lr=nan: give a number > 0"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1: give a number >= 0"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5: give a fraction between 0 and 1"),
        ("data.val_fraction=0", "data.val_fraction=0: give a fraction between 0 and 1"),
        ("model.label_smoothing=2", "model.label_smoothing=2: give a number in [0, 1)"),
        ("model.distill_alpha=1.5", "model.distill_alpha=1.5: give a weight between 0 and 1"),
        ("model.distill_temperature=0", "model.distill_temperature=0: give a number > 0"),
        ("+trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5: give a fraction 0..1"),
        ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: give a whole number >= 1"),
        ("callbacks.early_stopping.patience=x", "callbacks.early_stopping.patience='x': give a whole number"),
        ("callbacks.ema.decay=1", "callbacks.ema.decay=1: give a number between 0 and 1"),
        ("seed=-1", "seed=-1: give a whole number >= 0"),
    ],
)
def test_mistyped_numbers_fail_in_one_line(override, message):
    with pytest.raises(EmoError) as err:
        check_values(compose([override]))
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["trainer.max_epochs=-1", "+trainer.max_steps=100"],
        ["trainer.max_epochs=null"],
        ["model.distill_alpha=null", "callbacks.ema=null", "+trainer.limit_train_batches=5"],
        ["optimizer=sgd", "optimizer.lr=1"],
        ["debug=limit"],
        ["debug=overfit"],
    ],
)
def test_sound_numbers_pass(overrides):
    check_values(compose(overrides))


def test_every_shipped_config_passes():
    for name in group_options("experiment"):
        check_values(compose([f"experiment={name}"]))
    check_values(compose(["ckpt_path=x.ckpt"], config_name="evaluate"))


def test_every_rule_names_a_key_of_the_training_config():
    cfg = compose(["optimizer=sgd", "scheduler=warmup_cosine"])
    for key in VALUE_RULES:
        assert key.split(".")[0] in cfg, key


# ------------------------------------------------------------------- as a user runs it (slow)
def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"training ended (status {proc.returncode}) before {path} appeared:\n{proc.stderr.read()[-3000:]}"
            )
        if time.monotonic() > end:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


#: ``python -m emo.train`` with SIGINT taken as Python takes it, even where the test process ignores
#: it (a background job's children inherit an ignored SIGINT, and emo leaves it ignored).
SIGINT_DEFAULT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('emo.train', run_name='__main__', alter_sys=True)"
)


@pytest.mark.slow  # two launches of python -m emo.train: ~30 s
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_cli_run_stops_says_how_to_resume_and_resumes(tmp_path, fer_dir, signum):
    run = tmp_path / "outputs" / "run"
    args = [
        "model=cnn3",
        f"data.data_dir={fer_dir}",
        "data.classes=[angry,disgust,fear,happy,sad,surprise,neutral]",  # quoted in the command
        "data.batch_size=2",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1000",  # stops on the signal long before
        "+trainer.limit_train_batches=8",
        "+trainer.limit_val_batches=2",
        "callbacks.progress_bar=null",
        "hydra.run.dir=outputs/run",
    ]
    start = ["-c", SIGINT_DEFAULT] if signum == signal.SIGINT else ["-m", "emo.train"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, *start, *args],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    wait_for(run / "checkpoints" / "last.ckpt", proc)  # epoch 0 is done: now mid-way through epoch 1
    time.sleep(0.3)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after {signum.name}")
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    found = re.fullmatch(
        rf"error: training stopped by {signum.name} at epoch (\d+), step (\d+): resume with (python -m emo\.train .*)",
        errors[0],
    )
    assert found, errors[0]
    epoch, step, command = int(found[1]), int(found[2]), shlex.split(found[3])
    assert command[-2:] == ["hydra.run.dir=outputs/run", "ckpt_path=outputs/run/checkpoints/last.ckpt"]
    assert all(a in command for a in args[:-1])
    assert "'data.classes=[angry,disgust," in errors[0]  # a shell would glob it unquoted
    state = saved(run / "checkpoints" / "last.ckpt")
    assert (state["epoch"], state["global_step"]) == (epoch, step)
    interrupted = json.loads((run / "metrics.json").read_text())["interrupted"]
    assert interrupted["signal"] == signum.name and interrupted["step"] == step

    # The printed command, with a nearer end: it goes on from that step and tests.
    command = [
        f"trainer.max_epochs={epoch + 2}" if a.startswith("trainer.max_epochs=") else a for a in command
    ]
    proc = run_cli(*command[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = saved(run / "checkpoints" / "last.ckpt")
    assert state["epoch"] == epoch + 1 and state["global_step"] > step
    metrics = json.loads((run / "metrics.json").read_text())
    assert "accuracy" in metrics and "interrupted" not in metrics


@pytest.mark.slow  # one launch of python -m emo.train (~8 s to import and fail)
def test_the_cli_prints_a_mistyped_number_in_one_line(tmp_path, fer_dir):
    proc = run_cli("-m", "emo.train", f"data.data_dir={fer_dir}", "trainer.max_epochs=abc", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: trainer.max_epochs='abc': give a whole number >= 1 (-1: no limit)"
