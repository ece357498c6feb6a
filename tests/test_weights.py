"""Packing a run's checkpoint as bundled weights, and the bundled weights themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emo import weights
from emo.data import FER2013_CLASSES
from emo.data.transforms import Preprocess
from emo.errors import EmoError
from emo.models.module import load_checkpoint
from emo.train import train


def test_pack_keeps_what_inference_needs(trained_run, tmp_path):
    run = trained_run[0]
    best = Path(json.loads((run / "metrics.json").read_text())["checkpoint"])
    metrics = json.loads((run / "metrics.json").read_text())
    packed = weights.pack(best, tmp_path / "w" / "tiny.ckpt", metrics)
    assert packed.stat().st_size < 0.6 * best.stat().st_size  # optimizer state dropped
    a, b = load_checkpoint(best), load_checkpoint(packed)
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    assert b.class_names == list(FER2013_CLASSES) and b.preprocess == a.preprocess
    assert torch.load(packed, weights_only=True)["emo_metrics"]["accuracy"] == metrics["accuracy"]


def test_fp16_packing_halves_the_file_and_keeps_predictions(trained_run, tmp_path):
    best = Path(json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"])
    full = weights.pack(best, tmp_path / "full.ckpt")
    half = weights.pack(best, tmp_path / "half.ckpt", fp16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert next(b.parameters()).dtype == torch.float32  # cast back on load
    x = torch.randn(8, 1, 48, 48)
    torch.testing.assert_close(a.predict_proba(x), b.predict_proba(x), atol=2e-3, rtol=0)


COMMITTED = sorted(
    [*weights.WEIGHTS_DIR.glob("*.ckpt"), *(weights.WEIGHTS_DIR.parents[1] / "runs").glob("*/*.ckpt")]
)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_checkpoint_loads(path):
    """Bundled (fp16 too), queue-packed and resumable checkpoints, all written before
    save_hyperparameters and the Preprocess dataclass (their preprocess has ``grayscale``)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = load_checkpoint(path)
    assert model.class_names == raw["hyper_parameters"]["class_names"] and not model.training
    assert model.preprocess == Preprocess.of(raw["hyper_parameters"]["preprocess"])
    assert next(model.parameters()).dtype == torch.float32
    assert model.predict_proba(torch.zeros(2, 1, 48, 48)).shape == (2, len(model.class_names))


def test_new_checkpoints_store_plain_hyper_parameters(make_cfg, tmp_path):
    train(
        make_cfg(
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "test=false",
            "~logger",
            out_dir=tmp_path,
        )
    )
    hp = load_checkpoint(next((tmp_path / "checkpoints").glob("last.ckpt"))).hparams
    assert hp.preprocess == {"image_size": 48, "mean": 0.5077, "std": 0.255}  # no unread keys
    assert {"optimizer", "scheduler"}.isdisjoint(hp) and hp.net_kwargs == {
        "conv_dropout": 0.0,
        "dropout": 0.2,
        "hidden": 256,
    }
    assert type(hp.net_kwargs) is dict  # plain data, not an OmegaConf node
    with pytest.raises(EmoError, match="unknown keys \\['size'\\]"):
        Preprocess.of({"size": 48})


def test_without_an_index_default_and_leaderboard_are_the_most_accurate(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(EmoError, match="no bundled weights"):
        weights.default_name()
    src = weights.weights_path.__globals__  # the module namespace the helpers read
    assert src["WEIGHTS_DIR"] == tmp_path
    for name, acc in (("a", 0.61), ("b", 0.68), ("c", 0.65)):
        torch.save({"emo_metrics": {"accuracy": acc}}, tmp_path / f"{name}.ckpt")
    assert weights.available() == ["a", "b", "c"] and weights.default_name() == "b"
    assert weights.weights_path("leaderboard") == tmp_path / "b.ckpt"


def test_default_agrees_with_people_best_among_fast_models_that_keep_70_percent(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)

    def rec(acc, agree, realtime=True, classes=7, labels="fer2013"):
        pt = {"accuracy": acc, "agreement": agree}
        return {"classes": classes, "labels": labels, "realtime": realtime, "publictest": pt}

    index = {
        "board": rec(0.73, 0.66, realtime=False),  # most accurate, too slow for the default
        "people": rec(0.71, 0.78),  # agrees best among those at >= 70%
        "votes": rec(0.66, 0.84),  # agrees most, but below 70% on FER-2013 labels
        "small": rec(0.70, 0.70),
        "ferplus": rec(0.80, 0.90, classes=8, labels="ferplus"),  # another vocabulary
        "gone": rec(0.99, 0.99),  # recorded but not installed
    }
    for name in index:
        if name != "gone":
            torch.save({"emo_metrics": {}}, tmp_path / f"{name}.ckpt")
    (tmp_path / weights.INDEX_NAME).write_text(json.dumps(index))
    assert weights.default_name() == "people" and weights.leaderboard_name() == "board"
    assert weights.weights_path("default").stem == "people"
    index["people"]["realtime"] = False
    (tmp_path / weights.INDEX_NAME).write_text(json.dumps(index))
    assert weights.default_name() == "small"


def test_unknown_bundled_name_lists_the_available_ones():
    with pytest.raises(
        EmoError, match="no bundled weights named 'nope': choose one of .*default, leaderboard"
    ):
        weights.weights_path("nope")


def test_every_bundled_model_records_both_yardsticks():
    index = weights.index()
    assert set(index) == set(weights.available())
    for name, r in index.items():
        for split in ("publictest", "privatetest"):
            assert 0 < r[split]["accuracy"] <= 1 and 0 < r[split]["agreement"] <= 1, (name, split)


@pytest.mark.parametrize("name", weights.available())
def test_bundled_weights_load_and_predict(name):
    model = load_checkpoint(weights.weights_path(name))
    with torch.no_grad():
        probs = model(torch.zeros(2, 1, 48, 48)).softmax(-1)
    assert probs.shape == (2, len(model.class_names))
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    info = torch.load(weights.weights_path(name), weights_only=True)["emo_metrics"]
    assert info["split"] == "test" and 0 < info["accuracy"] <= 1  # provenance travels with the file


@pytest.mark.slow
@pytest.mark.parametrize("name", weights.available())
def test_bundled_weights_reproduce_their_recorded_privatetest_accuracy(name, make_cfg, tmp_path):
    from emo.evaluate import evaluate
    from tests.helpers import compose_cfg, real_data_or_skip

    data_dir = real_data_or_skip()
    recorded = weights.metrics(name)
    cfg = compose_cfg(
        [f"ckpt_path={weights.weights_path(name)}", f"tta={recorded['tta']}"], tmp_path, data_dir, "evaluate"
    )
    measured = evaluate(cfg)
    # PrivateTest: 3,589 faces; its FER+ majority labels keep 3,153 (unknown / not-a-face dropped).
    assert measured["n"] == recorded["n"] == (3153 if measured["labels"] == "ferplus" else 3589)
    assert measured["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
