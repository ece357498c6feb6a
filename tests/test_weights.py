"""Packing a run's checkpoint as bundled weights, and the bundled weights themselves."""

from __future__ import annotations

import json

import pytest
import torch

from emo import weights
from emo.data import FER2013_CLASSES
from emo.errors import EmoError
from emo.module import load_checkpoint
from emo.train import train


def test_pack_keeps_what_inference_needs(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("trainer.max_epochs=1", "logger={}", out_dir=run))
    best = next((run / "checkpoints").glob("best*.ckpt"))
    metrics = json.loads((run / "metrics.json").read_text())
    packed = weights.pack(best, tmp_path / "w" / "tiny.ckpt", metrics)
    assert packed.stat().st_size < 0.6 * best.stat().st_size  # optimizer state dropped
    a, b = load_checkpoint(best), load_checkpoint(packed)
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    assert b.class_names == list(FER2013_CLASSES) and b.preprocess == a.preprocess
    assert torch.load(packed, weights_only=True)["emo_metrics"]["accuracy"] == metrics["accuracy"]


def test_fp16_packing_halves_the_file_and_keeps_predictions(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("trainer.max_epochs=1", "logger={}", "test=false", out_dir=run))
    best = next((run / "checkpoints").glob("best*.ckpt"))
    full = weights.pack(best, tmp_path / "full.ckpt")
    half = weights.pack(best, tmp_path / "half.ckpt", fp16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert next(b.parameters()).dtype == torch.float32  # cast back on load
    x = torch.randn(8, 1, 48, 48)
    torch.testing.assert_close(a.predict_proba(x), b.predict_proba(x), atol=2e-3, rtol=0)


def test_default_is_the_most_accurate_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(EmoError, match="no bundled weights"):
        weights.default_name()
    src = weights.weights_path.__globals__  # the module namespace the helpers read
    assert src["WEIGHTS_DIR"] == tmp_path
    for name, acc in (("a", 0.61), ("b", 0.68), ("c", 0.65)):
        torch.save({"emo_metrics": {"accuracy": acc}}, tmp_path / f"{name}.ckpt")
    assert weights.available() == ["a", "b", "c"] and weights.default_name() == "b"


def test_unknown_bundled_name_lists_the_available_ones():
    with pytest.raises(EmoError, match="no bundled weights named 'nope'"):
        weights.weights_path("nope")


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
    from tests.conftest import compose_cfg, real_data_or_skip

    data_dir = real_data_or_skip()
    recorded = weights.metrics(name)
    cfg = compose_cfg(
        [f"ckpt_path={weights.weights_path(name)}", f"tta={recorded['tta']}"], tmp_path, data_dir, "evaluate"
    )
    measured = evaluate(cfg)
    assert measured["n"] == 3589
    assert measured["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
