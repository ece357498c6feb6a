"""FER+ votes: people labels, mixed targets, the agreement metric; stored soft targets."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from emo.cli import resolve_precision
from emo.data import FER2013DataModule
from emo.data.batch_augment import BatchMix
from emo.data.fer2013 import FER2013_CLASSES
from emo.data.ferplus import (
    FERPLUS_CLASSES,
    FERPLUS_COLUMNS,
    ferplus_majority,
    ferplus_probabilities,
    load_ferplus,
    mix_targets,
    people_labels,
    vote_distribution,
)
from emo.data.soft_targets import (
    SoftTargetsMismatch,
    load_soft_targets,
    read_soft_targets,
    resolve_soft_targets,
    save_soft_targets,
)
from emo.distill import main as distill_main
from emo.errors import EmoError
from emo.evaluate import align_probs, evaluate
from emo.inference.backends import best_checkpoint
from emo.models.module import load_checkpoint
from emo.train import train
from tests.helpers import FERPLUS_HEADER, compose_cfg, write_csv, write_ferplus


def test_people_labels_ties_go_to_the_earlier_column_and_other_majorities_drop():
    v = np.zeros((4, 10), dtype=np.uint8)
    v[0, [1, 4]] = 5  # happy 5 = angry 5: happy's column comes first
    v[1, 8] = 6  # unknown majority
    v[2, 7], v[2, 0] = 6, 4  # contempt majority
    v[3, 5] = 10  # disgust
    classes = list(FER2013_CLASSES)
    assert people_labels(v, classes).tolist() == [classes.index("happy"), -1, -1, classes.index("disgust")]
    # contempt becomes a people label when the model has that class
    assert people_labels(v, [*classes, "contempt"])[2] == 7


def test_mix_targets_blend_onehot_and_votes_and_keep_voteless_faces_hard():
    v = np.zeros((3, 10), dtype=np.uint8)
    v[0, FERPLUS_COLUMNS.index("happy")], v[0, FERPLUS_COLUMNS.index("surprise")] = 6, 2
    v[0, FERPLUS_COLUMNS.index("unknown")] = 2  # dropped, the rest renormalised
    v[1, FERPLUS_COLUMNS.index("no_face")] = 10  # no vote for any class
    v[2, FERPLUS_COLUMNS.index("sad")] = 10
    classes = list(FER2013_CLASSES)
    labels = np.array([classes.index("happy"), classes.index("angry"), classes.index("fear")])
    dist = vote_distribution(v, classes)
    assert dist[0, classes.index("happy")] == pytest.approx(0.75) and dist[1].sum() == 0
    t = mix_targets(labels, v, classes, 0.4)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
    assert t[0, classes.index("happy")] == pytest.approx(0.6 + 0.4 * 0.75)
    assert t[1, classes.index("angry")] == 1.0  # no votes: the FER-2013 label alone
    assert t[2, classes.index("fear")] == pytest.approx(0.6) and t[2, classes.index("sad")] == pytest.approx(
        0.4
    )
    np.testing.assert_array_equal(mix_targets(labels, v, classes, 0.0), np.eye(7, dtype=np.float32)[labels])
    with pytest.raises(EmoError, match="between 0 and 1"):
        mix_targets(labels, v, classes, 1.5)


def test_bad_ferplus_files_are_one_line_errors(tmp_path):
    with pytest.raises(EmoError, match="not found"):
        load_ferplus(tmp_path / "fer2013new.csv")
    (tmp_path / "a.csv").write_text("emotion,pixels,Usage\n0,1 2,Training\n")
    with pytest.raises(EmoError, match="is not FER\\+"):
        load_ferplus(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text(FERPLUS_HEADER + "\nTraining,x.png,1,2,3\n")
    with pytest.raises(EmoError, match="line 2: not a FER\\+ vote row"):
        load_ferplus(tmp_path / "b.csv")


def test_datamodule_serves_people_labels_and_mixed_targets(ferplus_dir, fer_rows):
    dm = FER2013DataModule(data_dir=str(ferplus_dir), augment=None, ferplus_mix=0.5, batch_size=8)
    dm.setup()
    val_rows = [(lab, i) for i, (lab, _, u) in enumerate(fer_rows) if u == "PublicTest"]
    # votes_for: kind 0 agrees, kind 1 votes for the FER+ column two to the right, kind 2 contempt
    cols = [FERPLUS_COLUMNS[(FERPLUS_COLUMNS.index(FER2013_CLASSES[lab]) + 2) % 7] for lab, _ in val_rows]
    expected = [
        lab if i % 3 == 0 else (-1 if i % 3 == 2 else FER2013_CLASSES.index(c))
        for (lab, i), c in zip(val_rows, cols)
    ]
    np.testing.assert_array_equal(dm.people["val"], expected)
    x, y, people = next(iter(dm.val_dataloader()))
    assert y.dtype == torch.long and people.tolist() == expected[:8]
    xt, yt = next(iter(dm.train_dataloader()))
    assert yt.shape == (8, 7) and torch.allclose(yt.sum(1), torch.ones(8))
    assert set(dm.datasets["train"].labels.tolist()) <= set(range(7))  # hard labels kept for counts


def test_misaligned_votes_are_an_error_only_when_needed(tmp_path, fer_rows):
    write_csv(tmp_path / "fer2013.csv", fer_rows)
    write_ferplus(tmp_path / "fer2013new.csv", fer_rows[:-1])  # a row short
    dm = FER2013DataModule(data_dir=str(tmp_path), augment=None)
    dm.setup()
    assert dm.people == {} and len(next(iter(dm.val_dataloader()))) == 2
    with pytest.raises(EmoError, match="does not line up"):
        FER2013DataModule(data_dir=str(tmp_path), augment=None, ferplus_mix=0.3).setup()
    with pytest.raises(EmoError, match="needs FER\\+ votes"):
        FER2013DataModule(data_dir=str(tmp_path / "nowhere"), ferplus_mix=0.3).load_votes(dm.load_arrays())


@pytest.mark.slow  # a two-epoch training run (~5 s); the fast suite trains on FER+ majority labels below
def test_people_run_selects_on_agreement_and_evaluate_reports_it(ferplus_dir, fer_rows, tmp_path):
    out = tmp_path / "people"
    overrides = ["trainer.max_epochs=2", "~logger", "data.ferplus_mix=0.5", "monitor=val/agree_ok"]
    train(compose_cfg([*overrides, "+model.agree_min_acc=0.0"], out, ferplus_dir))
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["best"]) == {"val/agree_ok"} and 0 <= saved["best"]["val/agree_ok"] <= 1
    assert 0 <= saved["agreement"] <= 1  # the test stage reports it too
    ev = evaluate(compose_cfg([f"ckpt_path={saved['checkpoint']}"], tmp_path / "ev", ferplus_dir, "evaluate"))
    counted = sum(1 for i, (_, _, u) in enumerate(fer_rows) if u == "PrivateTest" and i % 3 != 2)
    assert ev["agreement"] == pytest.approx(saved["agreement"])
    assert ev["agreement_n"] == saved["agreement_n"] == counted  # train and evaluate: the same keys


@pytest.fixture(scope="module")
def teacher(trained_run):
    return str(best_checkpoint(trained_run[0]))


@pytest.mark.slow  # trains a student (~3 s); stored targets' format and refusals stay in the fast suite
def test_stored_targets_match_the_live_teacher_and_train_a_student(teacher, fer_dir, tmp_path):
    targets = tmp_path / "t.pt"
    distill_main([teacher, "--out", str(targets), "--tta", "none", "--data-dir", str(fer_dir)])
    dm = FER2013DataModule(data_dir=str(fer_dir), augment=None)
    dm.setup()
    n = len(dm.datasets["train"])
    probs = load_soft_targets(targets, dm.class_names, dm.train_fingerprint, n)
    t = load_checkpoint(teacher)
    x = dm.datasets["train"]
    live = t.predict_proba(torch.stack([x[i][0] for i in range(n)]))
    torch.testing.assert_close(probs, live, atol=2e-3, rtol=0)  # fp16 storage
    # p ** (1/T), renormalised, is the teacher's softmax at temperature T
    student = load_checkpoint(teacher)
    student.distill_temperature, student._teachers = 3.0, [t]
    faces = torch.stack([x[i][0] for i in range(4)])
    logits = student(faces)
    stored = t.predict_proba(faces)
    torch.testing.assert_close(
        student._distill_loss(logits, faces, stored), student._distill_loss(logits, faces)
    )

    out = tmp_path / "student"
    run = ["trainer.max_epochs=1", "~logger", "test=false", "experiment=vgg_s_distill", "model=cnn3"]
    train(compose_cfg([*run, f"model.distill_targets={targets}"], out, fer_dir))
    assert load_checkpoint(out / "checkpoints" / "last.ckpt").hparams.distill_targets == str(targets)
    with pytest.raises(EmoError, match="distillation needs teachers"):
        train(compose_cfg(run, tmp_path / "none", fer_dir))
    with pytest.raises(EmoError, match="not both"):
        train(
            compose_cfg(
                [*run, f"model.distill_targets={targets}", f"model.distill_from=[{teacher}]"],
                tmp_path / "b",
                fer_dir,
            )
        )


def test_soft_targets_refuse_another_training_set_or_class_list(tmp_path):
    path = save_soft_targets(tmp_path / "t.pt", torch.full((5, 7), 1 / 7), FER2013_CLASSES, "abc")
    assert load_soft_targets(path, FER2013_CLASSES, "abc", 5).shape == (5, 7)
    with pytest.raises(EmoError, match="another training set"):
        load_soft_targets(path, FER2013_CLASSES, "xyz", 5)
    with pytest.raises(EmoError, match="are for classes"):
        load_soft_targets(path, FER2013_CLASSES[:5], "abc", 5)
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(EmoError, match="not an emo soft-target file"):
        load_soft_targets(tmp_path / "foreign.pt", FER2013_CLASSES, "abc", 5)


def test_the_package_ships_vgg_s_soft_targets_for_fer2013_by_name(tmp_path):
    shipped = resolve_soft_targets("vgg_s")
    assert shipped.parent.name == "targets" and shipped.is_file()
    data = read_soft_targets(shipped)
    assert list(data["class_names"]) == list(FER2013_CLASSES) and data["probs"].shape == (28_709, 7)
    assert resolve_soft_targets(tmp_path / "t.pt") == tmp_path / "t.pt"  # a path stays a path
    with pytest.raises(EmoError, match="no soft targets named 'vgg_x'.*ships ens, ens2, vgg_s"):
        resolve_soft_targets("vgg_x")


def test_cnn3_distils_from_the_shipped_targets_only_where_they_fit(make_cfg, tmp_path, caplog):
    # model=cnn3 (train.yaml's default) distils from vgg_s's stored targets, which were made for
    # FER-2013's Training faces: on other data it trains on the labels alone and says so...
    # A logging config applied in-process by an earlier test in the same worker (dictConfig's
    # disable_existing_loggers) can silence the module's logger; a user's run starts afresh.
    logging.getLogger("emo.models.module").disabled = False
    with caplog.at_level("WARNING"):
        train(make_cfg("debug=fdr", "test=false", out_dir=tmp_path / "optional"))
    assert "another training set" in caplog.text and "labels alone" in caplog.text
    # ...and a run that asks for them strictly stops in one line.
    with pytest.raises(SoftTargetsMismatch, match="another training set"):
        train(make_cfg("debug=fdr", "model.distill_optional=false", out_dir=tmp_path / "strict"))


def test_batch_mix_mixes_soft_and_extra_targets_with_the_same_weights():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 48, 48)
    faces = torch.arange(16)  # each face its own class: the mixed labels are the mixing weights
    teacher = torch.softmax(torch.randn(16, 16), -1)
    for _ in range(5):
        xm, weights, tm = BatchMix(16, mixup=0.4, cutmix=1.0, p=1.0)(x, faces, teacher)
        assert not torch.equal(xm, x)
        torch.testing.assert_close(weights.sum(1), torch.ones(16))
        torch.testing.assert_close(tm, weights @ teacher)  # the same weights mix the teacher's targets
        assert (weights > 0).sum(1).max() <= 2  # each face mixes with one other


def test_precision_auto_picks_a_real_lightning_precision():
    assert resolve_precision("auto") in {"bf16-mixed", "32-true"}
    assert resolve_precision("16-mixed") == "16-mixed"


def test_align_probs_matches_classes_by_name():
    p = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    assert torch.equal(align_probs(p, ["a", "b", "c"], ["a", "b", "c"]), p)
    padded = align_probs(p, ["a", "b", "c"], ["c", "a", "b", "d"])  # d: a class the model lacks
    assert torch.allclose(padded, torch.tensor([[0.5, 0.2, 0.3, 0.0], [0.0, 0.6, 0.4, 0.0]]))
    dropped = align_probs(p, ["a", "b", "c"], ["a", "b"])  # c dropped, rows renormalised
    assert torch.allclose(dropped, torch.tensor([[0.4, 0.6], [0.6, 0.4]]))


def test_ferplus_protocol_drops_single_votes_unclear_and_unknown_faces():
    v = np.zeros((4, 10), dtype=np.uint8)
    v[0, [0, 1]] = [6, 4]  # neutral 6/10: kept
    v[1, [0, 1, 2]] = [5, 4, 1]  # the single vote goes; neutral 5/9 > half: kept
    v[2, [0, 1]] = [5, 5]  # no category above half: dropped
    v[3, [8, 0]] = [7, 3]  # unknown majority: dropped
    labels = ferplus_majority(v)
    assert labels.tolist() == [FERPLUS_CLASSES.index("neutral")] * 2 + [-1, -1]
    p = ferplus_probabilities(v)
    assert p[1, FERPLUS_CLASSES.index("surprise")] == 0 and p[1].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "target",
    ["majority", pytest.param("probability", marks=pytest.mark.slow)],  # one run each
)
def test_ferplus_labels_train_an_eight_class_model_and_evaluate_says_so(
    ferplus_dir, fer_dir, tmp_path, target, teacher
):
    dm = FER2013DataModule(data_dir=str(ferplus_dir), labels="ferplus", ferplus_target=target, augment=None)
    dm.setup()
    assert dm.class_names == list(FERPLUS_CLASSES)
    # votes_for kind 2 gives contempt 7 of 10: an eighth-class face, kept by FER+ labels
    assert dm.class_counts("val")[FERPLUS_CLASSES.index("contempt")] > 0
    out = tmp_path / "fp"
    run = ["trainer.max_epochs=1", "~logger", "data.labels=ferplus", f"data.ferplus_target={target}"]
    train(compose_cfg([*run, f"init_from={teacher}"], out, ferplus_dir))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["labels"] == "ferplus" and len(saved["per_class"]) == 8
    ev = evaluate(compose_cfg([f"ckpt_path={saved['checkpoint']}"], tmp_path / "ev", ferplus_dir, "evaluate"))
    assert ev["labels"] == "ferplus" and ev["accuracy"] == pytest.approx(saved["accuracy"])
    # Across label sets: the eight-class model on FER-2013's labels (contempt dropped) and the
    # seven-class teacher on FER+'s, which can never say contempt.
    on_fer = evaluate(
        compose_cfg(
            [f"ckpt_path={saved['checkpoint']}", "labels=fer2013"], tmp_path / "e1", ferplus_dir, "evaluate"
        )
    )
    assert (
        on_fer["labels"] == "fer2013"
        and on_fer["model_labels"] == "ferplus"
        and len(on_fer["per_class"]) == 7
    )
    on_plus = evaluate(
        compose_cfg([f"ckpt_path={teacher}", "labels=ferplus"], tmp_path / "e2", ferplus_dir, "evaluate")
    )
    contempt = on_plus["per_class"]["contempt"]
    assert on_plus["model_labels"] == "fer2013" and contempt["support"] > 0 and contempt["recall"] == 0
    assert on_plus["accuracy"] <= 1 - contempt["support"] / on_plus["n"]
    with pytest.raises(EmoError, match="labels='votes' is not valid"):
        evaluate(
            compose_cfg([f"ckpt_path={teacher}", "labels=votes"], tmp_path / "e3", ferplus_dir, "evaluate")
        )
    with pytest.raises(EmoError, match="needs FER\\+ votes"):
        train(compose_cfg(run, tmp_path / "x", fer_dir))  # FER-2013 without fer2013new.csv
