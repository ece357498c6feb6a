"""Training and evaluation end to end on synthetic data, and the CLI's one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from emo.cli import compose
from emo.errors import EmoError
from emo.evaluate import evaluate
from emo.inference.backends import best_checkpoint
from emo.models.module import EmoModule, load_checkpoint
from emo.train import train
from tests.helpers import run_cli, run_entry_point

METRIC_KEYS = {"accuracy", "macro_f1", "per_class", "n", "split", "tta", "checkpoint"}


def test_fast_dev_run_trains_tests_and_writes_metrics(make_cfg, tmp_path):
    metrics = train(make_cfg("debug=fdr"))
    assert "train/loss" in metrics and "test/acc" in metrics
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert METRIC_KEYS <= saved.keys()
    assert saved["split"] == "test" and saved["tta"] == "none"
    assert set(saved["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert saved["n"] == sum(m["support"] for m in saved["per_class"].values()) > 0


def test_train_then_evaluate_end_to_end(trained_run, make_cfg, tmp_path):
    run, metrics = trained_run
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert {"last.ckpt"} < {c.name for c in ckpts}, ckpts
    best = next(c for c in ckpts if c.name.startswith("best"))
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["checkpoint"] == str(best)

    # the checkpoint alone rebuilds the classifier: classes and preprocessing inside
    model = load_checkpoint(best)
    assert model.class_names[0] == "angry" and model.preprocess.image_size == 48
    assert not model.training

    report = tmp_path / "report"
    summary = evaluate(make_cfg(f"ckpt_path={best}", "plots=true", config_name="evaluate", out_dir=report))
    for name in (
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "roc.png",
        "curves.png",
    ):
        assert (report / name).stat().st_size > 0, name
    saved = json.loads((report / "metrics.json").read_text())
    assert METRIC_KEYS <= saved.keys() and saved["n"] == 28
    # train's test stage and evaluate score the same checkpoint on the same split identically
    assert saved["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    assert saved["macro_f1"] == pytest.approx(trained["macro_f1"], abs=1e-6)
    assert "macro avg" in (report / "classification_report.txt").read_text()
    assert summary["accuracy"] == saved["accuracy"] == trained["accuracy"]  # exactly: the same counts
    assert metrics["test/acc"] == pytest.approx(saved["accuracy"])  # logged in float32


def test_monitor_val_f1_chooses_the_checkpoint_and_tracks_the_best(make_cfg, tmp_path):
    run = tmp_path / "run"
    metrics = train(make_cfg("monitor=val/f1", "trainer.max_epochs=2", "~logger", out_dir=run))
    saved = json.loads((run / "metrics.json").read_text())
    assert list(saved["best"]) == ["val/f1"]
    assert saved["best"]["val/f1"] == pytest.approx(metrics["val/f1_best"])
    assert "val/acc_best" not in metrics  # what tracks "best" follows the monitor
    ckpt = torch.load(saved["checkpoint"], weights_only=True)
    chosen = [s for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val/f1'")]
    assert chosen and chosen[0]["best_model_score"] == pytest.approx(saved["best"]["val/f1"])


def test_the_monitored_checkpoint_is_found_by_what_it_monitors():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from emo.train import monitored_checkpoint

    last, best = ModelCheckpoint(monitor=None), ModelCheckpoint(monitor="val/f1", mode="max")
    trainer = type("T", (), {"checkpoint_callbacks": [last, best]})()
    assert monitored_checkpoint(trainer, "val/f1") is best
    assert monitored_checkpoint(trainer, "val/acc") is None


def test_five_class_model_trains_and_evaluates(make_cfg, tmp_path):
    keep = "data.classes=[angry,happy,sad,surprise,neutral]"
    train(make_cfg("trainer.max_epochs=1", keep, out_dir=tmp_path / "run"))
    best = best_checkpoint(tmp_path / "run")
    # evaluate's config says nothing about classes: they come from the checkpoint
    saved = evaluate(make_cfg(f"ckpt_path={best}", config_name="evaluate", out_dir=tmp_path / "ev"))
    assert list(saved["per_class"]) == ["angry", "happy", "sad", "surprise", "neutral"]
    assert saved["n"] == 5 * 4


def test_tta_modes_are_mirror_invariant_and_reported(trained_run, make_cfg, tmp_path):
    best = json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"]
    model = load_checkpoint(best)
    x = torch.randn(5, 1, 48, 48)
    flip = model.predict_proba(x, "flip")
    torch.testing.assert_close(flip, model.predict_proba(x.flip(-1), "flip"))
    torch.testing.assert_close(flip, (model.predict_proba(x) + model.predict_proba(x.flip(-1))) / 2)
    # ten-crop's views of a mirrored face are the mirrored views: the same average
    ten = model.predict_proba(x, "tencrop")
    torch.testing.assert_close(ten, model.predict_proba(x.flip(-1), "tencrop"), atol=1e-5, rtol=1e-4)
    assert ten.shape == (5, 7) and not torch.allclose(ten, flip)
    for tta in ("flip", "tencrop"):
        saved = evaluate(
            make_cfg(f"ckpt_path={best}", f"tta={tta}", config_name="evaluate", out_dir=tmp_path / tta)
        )
        assert saved["tta"] == tta
        assert (tmp_path / tta / "metrics.json").is_file() and not list(
            (tmp_path / tta).glob("*.png")
        )  # plots=false
    with pytest.raises(EmoError, match="tta='fivecrop' is not valid: choose one of none, flip, tencrop"):
        evaluate(make_cfg(f"ckpt_path={best}", "tta=fivecrop", config_name="evaluate"))


def test_init_from_fine_tunes_from_weights(trained_run, make_cfg, tmp_path):
    src = json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"]
    kwargs = load_checkpoint(src).hparams.net_kwargs
    model = EmoModule(net_kwargs=kwargs)
    model.init_weights_from(src)
    torch.testing.assert_close(model.net.state_dict(), load_checkpoint(src).net.state_dict())
    with pytest.raises(EmoError, match="net_kwargs=.*give the same ones"):
        EmoModule(net_kwargs={**kwargs, "hidden": 64}).init_weights_from(src)
    # other classes: everything but the classifier
    two = EmoModule(class_names=["angry", "happy"], net_kwargs=kwargs)
    head = {k: v.clone() for k, v in two.net.state_dict().items() if k.startswith("head.4")}
    two.init_weights_from(src)
    for k, v in two.net.state_dict().items():
        expected = head[k] if k in head else load_checkpoint(src).net.state_dict()[k]
        torch.testing.assert_close(v, expected)
    with pytest.raises(EmoError, match="this run trains vgg_s"):
        EmoModule(arch="vgg_s").init_weights_from(src)
    metrics = train(make_cfg("debug=fdr", f"init_from={src}", out_dir=tmp_path / "b"))
    assert "test/acc" in metrics


def test_evaluate_rejects_missing_and_foreign_checkpoints(make_cfg, tmp_path):
    with pytest.raises(EmoError, match="not found"):
        evaluate(make_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}", config_name="evaluate"))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(EmoError, match="unreadable"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(EmoError, match="not an emo checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "data.data_dir=nowhere"], "FER-2013 not found in"),
        (
            ["train", "data.augment=medium"],
            "unknown augment 'medium': choose one of camera, camera_kept, light, none",
        ),
        (["train", "model.arch=vgg99"], "unknown model 'vgg99': choose one of cnn3"),
        (["train", "model=vgg99"], "unknown model 'vgg99': choose one of cnn3"),
        (
            ["train", "augment=medium"],
            "unknown augment 'medium': choose one of camera, camera_kept, light, none, strong",
        ),
        (["train", "-m", "optimizer=adam,lion"], "unknown optimizer 'lion': choose one of adam"),
        (["evaluate", "ckpt_path=missing.ckpt"], "checkpoint missing.ckpt not found"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(tmp_path, fer_dir, monkeypatch, capsys, args, expected):
    """The entry points in-process (test_cli_train_and_multirun launches the real commands)."""
    import emo.evaluate
    import emo.train

    door, *args = args
    if "nowhere" not in args[-1]:
        args = [*args, f"data.data_dir={fer_dir}"]
    monkeypatch.chdir(tmp_path)
    cli = {"train": emo.train.cli, "evaluate": emo.evaluate.cli}[door]
    code, err = run_entry_point(cli, [*args, f"hydra.run.dir={tmp_path}/out"], monkeypatch, capsys)
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], err[-2000:]


@pytest.mark.slow  # three launches of python -m emo.train
def test_cli_train_and_multirun(tmp_path, fer_dir):
    common = [f"data.data_dir={fer_dir}", "debug=fdr", "callbacks.progress_bar=null"]
    proc = run_cli("-m", "emo.train", "model=cnn3", "data.augment=strong", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train" / "runs").glob("*"))
    assert len(runs) == 1
    assert (runs[0] / "metrics.json").is_file()
    saved = OmegaConf.load(runs[0] / ".hydra" / "config.yaml")
    assert saved.data.augment == compose(["augment=strong"]).data.augment  # as typed: the group's preset

    proc = run_cli("-m", "emo.train", "-m", "optimizer.lr=1e-3,3e-4", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "outputs" / "train" / "multiruns").glob("*/*/metrics.json"))
    assert len(jobs) == 2


@pytest.mark.slow
def test_overfit_a_few_batches(make_cfg):
    metrics = train(make_cfg("debug=overfit", "test=false", "data.batch_size=16", "~logger"))
    assert metrics["train/acc"] >= 0.95, metrics


@pytest.mark.slow
def test_resume_from_last_ckpt(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("trainer.max_epochs=2", "test=false", out_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed = tmp_path / "resumed"
    metrics = train(make_cfg("trainer.max_epochs=4", "test=false", f"ckpt_path={last}", out_dir=resumed))
    state = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 3  # continued at epoch 2, not from scratch
    assert state["global_step"] == 2 * torch.load(last, weights_only=True)["global_step"]
    assert "val/acc" in metrics


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_validation_scores_with_val_tta(tta):
    import lightning as L

    torch.manual_seed(0)
    model = EmoModule(arch="cnn3", val_tta=tta).eval()
    x, y = torch.randn(64, 1, 48, 48), torch.randint(0, 7, (64,))
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    logged = trainer.validate(
        model, torch.utils.data.DataLoader(list(zip(x, y)), batch_size=16), verbose=False
    )[0]
    expected = (model.predict_proba(x, tta).argmax(-1) == y).float().mean().item()
    assert logged["val/acc"] == pytest.approx(expected, abs=1e-6)
    plain = (model(x).argmax(-1) == y).float().mean().item()
    assert tta == "none" or expected != plain  # the mirrored faces change some predictions here


def test_val_tta_must_be_a_known_one():
    with pytest.raises(EmoError, match="tta"):
        EmoModule(arch="cnn3", val_tta="mirror")


def test_a_runs_directory_runs_in_the_realtime_loop_on_the_torch_backend(trained_run, tmp_path):
    """With the train extra, ``python -m emo.realtime --ckpt outputs/train/runs/<date>`` loads the
    run's best checkpoint in PyTorch, as the design card's realtime.py does."""
    from emo.inference import realtime
    from emo.samples import moving_face_frames, write_video

    run, _ = trained_run
    model = realtime.load_model(run)
    assert model.backend.name == "torch" and model.source == str(best_checkpoint(run))
    video = write_video(tmp_path / "clip.mp4", moving_face_frames(4))
    stats = realtime.run(video, ckpt=run, headless=True, csv_path=tmp_path / "p.csv")
    assert stats["frames"] == 4 and (tmp_path / "p.csv").read_text().count("\n") >= 5


def test_emo_train_is_python_m_emo_train(monkeypatch, capsys):
    """``emo train ...`` is the Hydra door itself: the same overrides, the same config."""
    from emo.__main__ import main

    monkeypatch.setattr(sys, "argv", ["emo"])
    GlobalHydra.instance().clear()
    assert main(["train", "model=cnn3", "data.augment=strong", "--cfg", "job"]) == 0
    GlobalHydra.instance().clear()
    printed = capsys.readouterr().out
    assert "arch: cnn3" in printed and "name: strong" in printed
