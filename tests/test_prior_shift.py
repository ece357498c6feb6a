"""Sliding a model along the two yardsticks with a class-prior shift (research/prior_shift.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
import torch

from emo.data import FER2013DataModule
from emo.data.fer2013 import FER2013_CLASSES
from emo.evaluate import split_faces
from emo.models.module import load_checkpoint
from emo.models.pack import pack
from emo.paths import PACKAGE_DIR

spec = importlib.util.spec_from_file_location(
    "prior_shift", PACKAGE_DIR.parent / "research" / "prior_shift.py"
)
ps = sys.modules["prior_shift"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ps)


def test_the_shift_is_the_log_ratio_of_the_two_label_sources_shares():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])  # shares 3/8, 1/8, 4/8
    people = torch.tensor([0, 2, 2, 2, 2, 2, -1, -1])  # 1/6, -, 5/6 (-1: no majority among the classes)
    shift = ps.class_shift(labels, people, 3)
    assert shift[0].item() == pytest.approx(math.log((1 / 6) / (3 / 8)))
    assert shift[1].item() == 0.0  # a class people never chose: no shift rather than -inf
    assert shift[2].item() == pytest.approx(math.log((5 / 6) / (4 / 8)))


def test_the_chosen_shift_agrees_best_among_those_that_keep_the_accuracy():
    rows = [(-0.1, 0.72, 0.60), (0.0, 0.71, 0.65), (0.1, 0.70, 0.70), (0.2, 0.69, 0.75), (0.3, 0.70, 0.70)]
    assert ps.choose(rows, 0.70) == (0.1, 0.70, 0.70)  # 0.2 agrees more but drops under 70%; tie: the smaller
    assert ps.choose(rows, 0.0) == (0.2, 0.69, 0.75)
    assert ps.choose(rows, 0.73) is None


def test_the_written_checkpoint_predicts_the_shifted_probabilities_it_was_chosen_by(
    trained_run, ferplus_dir, tmp_path, capsys
):
    src = json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"]
    out = tmp_path / "shifted.ckpt"
    args = [src, "--out", str(out), "--tta", "flip", "--min-accuracy", "0", "--data-dir", str(ferplus_dir)]
    ps.main(args)
    printed = capsys.readouterr().out
    chosen = torch.load(out, weights_only=True)["emo_prior_shift"]["lambda"]
    assert f"chosen lam {chosen:+.2f}" in printed and f"| {chosen:+.2f} **chosen**" in printed
    ps.main([*args, "--lam", "0.8"])  # a given shift, still scored: the check below needs one that moves
    recorded = torch.load(out, weights_only=True)["emo_prior_shift"]
    lam = recorded["lambda"]
    assert lam == 0.8 and "| +0.00 (as trained) |" in capsys.readouterr().out

    model, shifted = load_checkpoint(src), load_checkpoint(out)
    dm = FER2013DataModule(data_dir=ferplus_dir, classes=FER2013_CLASSES, augment=None)
    faces = split_faces(dm, "val")
    shift = torch.tensor(recorded["shift"])
    expected = (ps.view_logits(model, faces, "flip") + lam * shift).softmax(-1).mean(0)
    torch.testing.assert_close(shifted.predict_proba(faces, "flip"), expected, atol=1e-5, rtol=0)
    # the accuracy and agreement it was chosen by are the written model's own
    pred = shifted.predict_proba(faces, "flip").argmax(1)
    labels, people = torch.as_tensor(dm.datasets["val"].labels), torch.as_tensor(dm.people["val"])
    assert (pred == labels).float().mean().item() == pytest.approx(recorded["publictest"]["accuracy"])
    counted = people >= 0
    assert (pred[counted] == people[counted]).float().mean().item() == pytest.approx(
        recorded["publictest"]["agreement"]
    )
    # only the classifier's bias moved, and packing keeps the record
    a, b = model.state_dict(), shifted.state_dict()
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert moved == [ps.final_linear(model)]
    packed = pack(out, tmp_path / "packed.ckpt", fp16=True)
    assert torch.load(packed, weights_only=True)["emo_prior_shift"]["lambda"] == lam


def test_no_shift_that_keeps_the_accuracy_writes_nothing(trained_run, ferplus_dir, fer_dir, tmp_path):
    src = json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"]
    out = tmp_path / "shifted.ckpt"
    with pytest.raises(SystemExit, match="no shift keeps 101% FER-2013 PublicTest accuracy: nothing written"):
        ps.main([src, "--out", str(out), "--min-accuracy", "1.01", "--data-dir", str(ferplus_dir)])
    assert not out.exists()
    with pytest.raises(SystemExit, match="no FER\\+ votes"):  # FER-2013 alone: nothing to shift towards
        ps.main([src, "--out", str(out), "--data-dir", str(fer_dir)])
