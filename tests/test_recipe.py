"""The accuracy recipe: batched on-device augmentation, MixUp/CutMix, EMA, warm-up cosine,
distillation and ensembles."""

from __future__ import annotations

import json

import pytest
import torch

from emo.cli import compose
from emo.data import FER2013DataModule
from emo.data.batch_augment import BatchAugment, BatchMix
from emo.data.transforms import resolve_augment
from emo.errors import EmoError
from emo.evaluate import evaluate
from emo.inference.backends import best_checkpoint
from emo.models.module import load_checkpoint, load_ensemble, read_checkpoint
from emo.optim import warmup_cosine
from emo.train import train


def faces(n=16, seed=0):
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_batch_augment_off_is_identity_and_flip_is_exact():
    x = faces()
    torch.testing.assert_close(BatchAugment()(x), x)
    torch.testing.assert_close(BatchAugment(hflip=1.0)(x), x.flip(-1), atol=1e-5, rtol=0)


def test_batch_augment_draws_per_image_parameters():
    x = faces(1).expand(64, -1, -1, -1).contiguous()  # the same face 64 times
    y = BatchAugment(rotate=15, scale=0.15, shift=0.1, affine_p=1.0, brightness_contrast=0.25)(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    distinct = {tuple(v.flatten()[:50].round(decimals=4).tolist()) for v in y}
    assert len(distinct) > 60  # not one random change for the whole batch


@pytest.mark.parametrize(
    "preset, following, total",
    [  # recorded before the camera steps existed (issue 15)
        ("none", [0.29611194, 0.51656228, 0.25167072, 0.68855679], 295133.7599),
        ("light", [0.69447154, 0.24778247, 0.41107523, 0.19242734], 295062.1616),
        ("strong", [0.98400003, 0.56768340, 0.06869805, 0.70712930], 290770.7434),
    ],
)
def test_presets_without_camera_steps_augment_and_draw_as_before_them(preset, following, total):
    """Camera steps that are off draw no random numbers: the same batches for the same seed."""
    flags = resolve_augment(compose([f"augment={preset}"]).data.augment)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.rand(256, 1, 48, 48)
        torch.manual_seed(123)
        y = BatchAugment(**flags)(x)
        after = torch.rand(4)  # the generator's next draws: the same count of draws was consumed
    torch.testing.assert_close(after, torch.tensor(following), atol=1e-7, rtol=0)
    assert y.double().sum().item() == pytest.approx(total, rel=1e-6)


def test_batch_camera_steps_keep_shape_and_range_and_differ_per_image():
    x = faces(1).expand(64, -1, -1, -1).contiguous()
    for step in ("perspective", "crop_jitter", "lighting", "blur", "noise", "jpeg"):
        y = BatchAugment(**{step: 1.0})(x)
        assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1, step
        distinct = {tuple(v.flatten()[:200].round(decimals=3).tolist()) for v in y}
        assert len(distinct) > 20, step  # drawn per image (JPEG: 51 qualities)
        torch.testing.assert_close(BatchAugment(**{step: 0.0})(x), x)


def test_batch_erasing_blanks_one_rectangle_of_2_to_20_percent():
    x = faces() + 0.5  # no pixel is 0 before erasing
    y = BatchAugment(erasing=1.0)(x)
    for img in y[:, 0]:
        zero = img == 0
        rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
        area = zero.sum().item()
        assert 0.015 * 48 * 48 <= area <= 0.2 * 48 * 48
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle


def test_batch_mix_gives_soft_targets_that_sum_to_one():
    x, y = faces(), torch.arange(16) % 7
    xm, ym = BatchMix(7, mixup=0.2, cutmix=1.0, p=1.0)(x, y)
    assert ym.shape == (16, 7) and torch.allclose(ym.sum(1), torch.ones(16))
    assert (ym > 0).sum(1).max() == 2  # each face mixes two labels
    x0, y0 = BatchMix(7, p=1.0)(x, y)  # no alpha: off
    assert torch.equal(y0, y) and torch.equal(x0, x)


def test_device_augment_loader_yields_uint8_then_normalised_augmented_batches(fer_dir):
    dm = FER2013DataModule(
        data_dir=str(fer_dir),
        augment=compose(["augment=strong"]).data.augment,
        device_augment=True,
        batch_size=16,
    )
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 1, 48, 48) and y.shape == (16,)
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.dtype == torch.float32  # evaluation batches are normalised once, up front
    xn, _ = dm.on_after_batch_transfer((x, y), 0)  # no trainer: evaluation semantics
    ref = (x.float() / 255 - dm.preprocess.mean) / dm.preprocess.std
    torch.testing.assert_close(xn, ref)


def test_warmup_cosine_rises_then_decays():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_cosine(opt, max_epochs=10, warmup_epochs=3, warmup_start=0.1, eta_min=0.0)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[3] == pytest.approx(1.0)
    assert lrs[:4] == sorted(lrs[:4]) and lrs[3:] == sorted(lrs[3:], reverse=True)


def test_recipe_trains_with_device_augment_mix_and_ema(make_cfg, tmp_path):
    out = tmp_path / "run"
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "~logger",
        "augment=strong_mix",
        "data.device_augment=true",
        "data.augment.mix_p=1.0",
        "callbacks.ema.decay=0.5",
        out_dir=out,
    )
    metrics = train(cfg)
    ckpt = read_checkpoint(best_checkpoint(out))
    # the checkpoint's weights are the average; the raw ones ride along for resuming
    raw, avg = ckpt["current_model_state"], ckpt["state_dict"]
    assert any(not torch.equal(raw[k], avg[k]) for k in avg if k.startswith("net."))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(metrics["test/acc"])
    # train tested the averaged weights: evaluate (which reads state_dict) agrees exactly
    ev = evaluate(
        make_cfg(f"ckpt_path={saved['checkpoint']}", config_name="evaluate", out_dir=tmp_path / "e")
    )
    assert ev["accuracy"] == pytest.approx(saved["accuracy"])


def test_ensemble_averages_member_probabilities(two_runs):
    ens = load_ensemble(two_runs)
    a, b = (load_checkpoint(p) for p in two_runs)
    x = torch.randn(4, 1, 48, 48)
    mean = (a.predict_proba(x, "flip") + b.predict_proba(x, "flip")) / 2
    torch.testing.assert_close(ens.predict_proba(x, "flip"), mean)


def test_ensemble_evaluates_and_rejects_mismatched_members(two_runs, make_cfg, tmp_path):
    out = evaluate(
        make_cfg(f"ckpt_path=[{two_runs[0]},{two_runs[1]}]", config_name="evaluate", out_dir=tmp_path)
    )
    assert out["checkpoint"] == two_runs and out["n"] > 0
    ckpt = read_checkpoint(two_runs[0])
    ckpt["hyper_parameters"]["class_names"] = ["angry", "happy", "sad", "surprise", "neutral", "a", "b"]
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(EmoError, match="ensemble checkpoints trained on the same classes"):
        load_ensemble([two_runs[0], tmp_path / "other.ckpt"])


def test_distillation_loss_is_zero_against_itself_and_students_keep_no_teachers(two_runs, make_cfg, tmp_path):
    a, b = (load_checkpoint(p) for p in two_runs)
    x = torch.randn(8, 1, 48, 48)
    a._teachers = [load_checkpoint(two_runs[0])]  # its own copy: nothing left to learn
    assert abs(a._distill_loss(a(x), x).item()) < 1e-6
    a._teachers = [b]
    assert a._distill_loss(a(x), x).item() > 1e-4
    b._teachers = [load_checkpoint(two_runs[0]), load_checkpoint(two_runs[1])]
    t = b.distill_temperature
    mean = (b._teachers[0](x).div(t).softmax(-1) + b._teachers[1](x).div(t).softmax(-1)) / 2
    ref = torch.nn.functional.kl_div(b(x).div(t).log_softmax(-1), mean, reduction="batchmean") * t * t
    torch.testing.assert_close(b._distill_loss(b(x), x), ref)

    out = tmp_path / "kd"
    distil = [f"model.distill_from=[{two_runs[0]},{two_runs[1]}]", "model.distill_alpha=0.7"]
    with pytest.raises(EmoError, match="not both .*distill_targets is vgg_s: add model.distill_targets=null"):
        train(make_cfg("debug=fdr", *distil, out_dir=tmp_path / "both"))  # cnn3's stored targets
    distil.append("model.distill_targets=null")
    train(make_cfg("trainer.max_epochs=1", "~logger", "test=false", *distil, out_dir=out))
    ckpt = read_checkpoint(next((out / "checkpoints").glob("last.ckpt")))
    assert set(ckpt["state_dict"]) == set(read_checkpoint(two_runs[0])["state_dict"])  # student only
    assert ckpt["hyper_parameters"]["distill_from"] == two_runs  # provenance
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")._teachers == []  # not loaded for inference


def test_teacher_with_other_classes_is_refused(two_runs, make_cfg, tmp_path):
    cfg = make_cfg(
        "debug=fdr",
        "data.classes=[angry,happy,sad,surprise,neutral]",
        f"model.distill_from=[{two_runs[0]}]",
        "model.distill_targets=null",
        out_dir=tmp_path,
    )
    with pytest.raises(EmoError, match="teacher .* predicts"):
        train(cfg)
