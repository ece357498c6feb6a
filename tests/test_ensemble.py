"""Ensembles: several checkpoints packed into one file (``python -m emo.models.pack A B NAME``),
loaded as an Ensemble, exported as one ONNX graph, served by EmotionRecognizer, scored by evaluate
and the weights index."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from emo import EmotionRecognizer, weights
from emo.errors import EmoError
from emo.evaluate import evaluate
from emo.models import pack as packing
from emo.models.checkpoint import is_ensemble_file, read_checkpoint
from emo.models.ensemble import Ensemble
from emo.models.module import EmoModule, load_checkpoint, load_ensemble
from emo.models.pack import pack, pack_ensemble
from emo.paths import PACKAGE_DIR
from emo.samples import sample_path


@pytest.fixture(scope="module")
def ens_file(two_runs, tmp_path_factory):
    """The two synthetic cnn3 runs packed as one fp32 ensemble file."""
    return pack_ensemble(two_runs, tmp_path_factory.mktemp("ens") / "ens.ckpt")


def faces(n=6, seed=0):
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_packed_ensemble_predicts_its_members_mean(two_runs, ens_file, tmp_path):
    ens = load_checkpoint(ens_file)
    a, b = (load_checkpoint(p) for p in two_runs)
    assert isinstance(ens, Ensemble) and not ens.training and is_ensemble_file(ens_file)
    assert not is_ensemble_file(two_runs[0]) and not is_ensemble_file(tmp_path / "missing.ckpt")
    assert ens.hparams.arch == "ensemble(cnn3, cnn3)" and ens.hparams.members == ["cnn3", "cnn3"]
    assert ens.class_names == a.class_names and ens.preprocess == a.preprocess and ens.labels == a.labels
    x = faces()
    for tta in ("none", "flip", "tencrop"):
        mean = (a.predict_proba(x, tta) + b.predict_proba(x, tta)) / 2
        torch.testing.assert_close(ens.predict_proba(x, tta), mean)
    with torch.no_grad():  # forward: log mean probabilities, so softmax gives the prediction back
        torch.testing.assert_close(ens(x).softmax(-1), ens.predict_proba(x))
    raw = read_checkpoint(ens_file)
    assert len(raw["members"]) == 2 and raw["hyper_parameters"]["class_names"] == a.class_names
    # fp16: about half the file, probabilities within fp16's rounding
    half = pack_ensemble(two_runs, tmp_path / "half.ckpt", fp16=True)
    assert half.stat().st_size < 0.6 * ens_file.stat().st_size
    loaded = load_checkpoint(half)
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(
        loaded.predict_proba(x, "flip"), ens.predict_proba(x, "flip"), atol=2e-3, rtol=0
    )
    # the same as the ensemble of the two files
    torch.testing.assert_close(load_ensemble(two_runs).predict_proba(x), ens.predict_proba(x))


def test_int8_weights_take_a_quarter_of_fp32_and_load_as_float_within_half_a_step(
    two_runs, ens_file, tmp_path
):
    fp32 = [read_checkpoint(p)["state_dict"] for p in two_runs]
    small = pack_ensemble(two_runs, tmp_path / "int8.ckpt", int8=True)
    # cnn3's weights are nearly all conv and linear: about a quarter of the fp32 file
    assert small.stat().st_size < 0.3 * ens_file.stat().st_size
    stored = torch.load(small, weights_only=True)["members"][0]
    conv = next(k for k, v in fp32[0].items() if v.ndim == 4)
    assert stored["state_dict"][conv].dtype == torch.int8
    assert stored["emo_int8_scales"][conv].shape == (fp32[0][conv].shape[0],)  # one per output channel
    bias = next(k for k, v in fp32[0].items() if v.ndim == 1 and v.is_floating_point())
    assert stored["state_dict"][bias].dtype == torch.float16  # the rest as in --fp16

    raw = read_checkpoint(small)  # every reader gets float weights back, the scales gone
    for member, original in zip(raw["members"], fp32):
        assert "emo_int8_scales" not in member
        for key, value in original.items():
            got = member["state_dict"][key]
            if value.is_floating_point() and value.ndim >= 2:
                step = value.abs().flatten(1).amax(1) / 127  # each channel's quantization step
                err = (got.float() - value).abs().flatten(1).amax(1)
                assert got.dtype == torch.float32 and bool((err <= step / 2 + 1e-7).all()), key
                assert err.max() > 0  # rounded for real
    loaded = load_checkpoint(small)
    assert isinstance(loaded, Ensemble) and next(loaded.parameters()).dtype == torch.float32
    x = faces()
    torch.testing.assert_close(
        loaded.predict_proba(x, "flip"), load_checkpoint(ens_file).predict_proba(x, "flip"), atol=2e-2, rtol=0
    )
    # one network packed so loads the same way, and fine-tunes from it (init_from reads it)
    single = pack(two_runs[0], tmp_path / "one.ckpt", int8=True)
    one = load_checkpoint(single)
    assert isinstance(one, EmoModule)
    torch.testing.assert_close(one.predict_proba(x), loaded.members[0].predict_proba(x))


def test_an_ensemble_file_teaches_as_its_stored_probabilities_would(two_runs, ens_file):
    """An ensemble teacher's softened target is its mean probability p ** (1/T), renormalised:
    the same as for stored soft targets (``python -m emo.distill``) of the same members."""
    student, ens = load_checkpoint(two_runs[0]), load_checkpoint(ens_file)
    x = faces(8)
    stored = student._distill_loss(student(x), x, ens.predict_proba(x))
    student._teachers = [ens]
    torch.testing.assert_close(student._distill_loss(student(x), x), stored)


def test_recognizer_on_an_ensemble_classifies_as_its_members_mean(two_runs, ens_file, capsys):
    from emo.inference.predict import main

    rec = EmotionRecognizer.from_checkpoint(ens_file)
    a, b = (EmotionRecognizer.from_checkpoint(p) for p in two_runs)
    assert rec.backend.name == "torch" and rec.tta == "none" and rec.class_names == a.class_names
    crop = np.random.default_rng(0).integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    for tta in ("none", "flip"):
        mean = (a.classify(crop, tta) + b.classify(crop, tta)) / 2
        np.testing.assert_allclose(rec.classify(crop, tta), mean, atol=1e-6)
    assert EmotionRecognizer.from_checkpoint(ens_file, tta="flip").tta == "flip"
    photo = str(sample_path("astronaut"))
    (face,) = rec.predict(photo)
    assert main([photo, "--ckpt", str(ens_file), "--json"]) == 0  # emo-predict
    (row,) = json.loads(capsys.readouterr().out)
    assert row["scores"] == pytest.approx(face.scores, abs=1e-6)


def test_an_ensemble_exports_as_one_graph_of_its_members_mean(two_runs, ens_file, tmp_path):
    pytest.importorskip("onnxscript")
    from emo.models.onnx import export_onnx

    path = tmp_path / "ens.onnx"
    export_onnx(load_checkpoint(ens_file), path, metadata={"emo_tta": "flip"})
    rec = EmotionRecognizer.from_checkpoint(path)
    assert rec.backend.name == "onnx" and rec.tta == "flip"  # the TTA travels in the file
    a, b = (EmotionRecognizer.from_checkpoint(p) for p in two_runs)
    crop = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64), dtype=np.uint8)
    for tta in ("none", "flip", "tencrop"):
        mean = (a.classify(crop, tta) + b.classify(crop, tta)) / 2
        np.testing.assert_allclose(rec.classify(crop, tta), mean, atol=1e-6)
    # --backend onnx on the ensemble file: the same graph, exported once into the cache
    cached = EmotionRecognizer.from_checkpoint(ens_file, backend="onnx")
    assert cached.backend.name == "onnx" and cached.tta == "none"
    np.testing.assert_allclose(cached.classify(crop), rec.classify(crop, "none"), atol=1e-6)


def test_bad_ensembles_are_one_line_errors(two_runs, ens_file, tmp_path, monkeypatch):
    ckpt = read_checkpoint(two_runs[1])
    ckpt["hyper_parameters"]["class_names"] = ["angry", "happy", "sad", "surprise", "neutral", "a", "b"]
    torch.save(ckpt, tmp_path / "other.ckpt")
    out = tmp_path / "bad.ckpt"
    with pytest.raises(EmoError) as err:
        pack_ensemble([two_runs[0], tmp_path / "other.ckpt"], out)
    assert "other.ckpt predicts" in one_line(
        err
    ) and "ensemble checkpoints trained on the same classes" in str(err.value)
    with pytest.raises(EmoError, match="is an ensemble file already: pack its members"):
        pack_ensemble([ens_file, two_runs[0]], out)
    with pytest.raises(EmoError, match="is an ensemble file already: pack its members"):
        pack(ens_file, out)
    with pytest.raises(EmoError, match="two checkpoints or more, not 1"):
        pack_ensemble([two_runs[0]], out)
    monkeypatch.setattr(packing, "MAX_ENSEMBLE_MB", 0.5)
    with pytest.raises(EmoError) as err:
        pack_ensemble(two_runs, out)
    size = ens_file.stat().st_size / 1e6
    assert one_line(err) == (
        f"the ensemble of 2 would take {size:.1f} MB, over the 0.5 MB a bundled file may take: "
        "drop a member or pack in fp16 (--fp16) or int8 (--int8)"
    )
    assert not out.exists()  # nothing written
    # garbled ensemble files: the one-line errors of foreign files
    torch.save({"emo_format": "ensemble", "members": []}, out)
    with pytest.raises(EmoError, match="an emo ensemble without members"):
        load_checkpoint(out)
    raw = read_checkpoint(ens_file)
    del raw["members"][1]["hyper_parameters"]["arch"]
    torch.save(raw, out)
    with pytest.raises(EmoError) as err:
        load_checkpoint(out)
    assert one_line(err).startswith(f"{out} (ensemble member 2) is not an emo checkpoint")
    raw = read_checkpoint(ens_file)
    raw["members"][0]["state_dict"].popitem()
    torch.save(raw, out)
    with pytest.raises(EmoError) as err:
        load_checkpoint(out)
    assert one_line(err).startswith(f"{out}: ensemble member 1's weights do not fit cnn3")
    out.write_bytes(ens_file.read_bytes()[:1000])  # truncated
    with pytest.raises(EmoError, match="is unreadable"):
        load_checkpoint(out)


def test_evaluate_on_an_ensemble_file_equals_evaluate_on_its_members(two_runs, ens_file, make_cfg, tmp_path):
    listed = evaluate(
        make_cfg(
            f"ckpt_path=[{two_runs[0]},{two_runs[1]}]",
            "tta=flip",
            config_name="evaluate",
            out_dir=tmp_path / "l",
        )
    )
    packed = evaluate(
        make_cfg(f"ckpt_path={ens_file}", "tta=flip", config_name="evaluate", out_dir=tmp_path / "p")
    )
    assert packed.pop("checkpoint") == str(ens_file) and listed.pop("checkpoint") == two_runs
    assert packed == listed and packed["n"] > 0  # the same probabilities: every number equal


def test_weights_cli_packs_one_checkpoint_as_before_and_several_as_an_ensemble(
    two_runs, trained_run, tmp_path, capsys
):
    single = tmp_path / "tiny.ckpt"
    packing.main([two_runs[0], "tiny", "--out", str(single)])
    assert "wrote" in capsys.readouterr().err
    model = load_checkpoint(single)
    assert isinstance(model, EmoModule)
    recorded = json.loads((trained_run[0] / "metrics.json").read_text())
    stored = torch.load(single, weights_only=True)
    assert stored["emo_metrics"]["accuracy"] == recorded["accuracy"]  # the run's, found beside it
    assert "checkpoint" not in stored["emo_metrics"] and "emo_format" not in stored

    ens_metrics = tmp_path / "metrics.json"
    ens_metrics.write_text(json.dumps({"accuracy": 0.5, "split": "test", "checkpoint": two_runs}))
    out = tmp_path / "ens.ckpt"
    packing.main([*two_runs, "ens", "--fp16", "--metrics", str(ens_metrics), "--out", str(out)])
    assert "an ensemble of 2" in capsys.readouterr().err
    assert isinstance(load_checkpoint(out), Ensemble)
    assert torch.load(out, weights_only=True)["emo_metrics"] == {"accuracy": 0.5, "split": "test"}
    packing.main([*two_runs, "ens", "--int8", "--out", str(out)])
    assert isinstance(load_checkpoint(out), Ensemble)
    assert torch.load(out, weights_only=True)["members"][1]["emo_int8_scales"]
    packing.main([*two_runs, "ens", "--out", str(out)])  # no --metrics: no member's metrics either
    assert torch.load(out, weights_only=True)["emo_metrics"] == {}
    with pytest.raises(SystemExit):
        packing.main([two_runs[0], str(tmp_path / "other.ckpt"), "ens", "--out", str(out)])
    assert "error: checkpoint" in capsys.readouterr().err


@pytest.fixture
def bundled(two_runs, ens_file, tmp_path, monkeypatch):
    """A weights directory holding a single model ``solo`` and an ensemble ``ensemble``: their
    packed checkpoints and ONNX files, as the source checkout keeps them."""
    pytest.importorskip("onnxscript")
    from emo.export import main as export

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    pack(two_runs[0], tmp_path / "solo.ckpt", {"accuracy": 0.70})
    pack_ensemble(two_runs, tmp_path / "ensemble.ckpt", {"accuracy": 0.73}, fp16=True)
    (tmp_path / weights.INDEX_NAME).write_text(json.dumps({n: {"tta": "flip"} for n in ("solo", "ensemble")}))
    export(["--ckpt", str(tmp_path / "solo.ckpt"), "--bundle", "solo"])
    export(["--ckpt", *two_runs, "--bundle", "ensemble"])
    (tmp_path / weights.INDEX_NAME).unlink()
    return tmp_path


def test_a_bundled_ensemble_is_the_leaderboard_but_never_the_default(bundled):
    assert weights.available() == ["ensemble", "solo"]

    def rec(acc, realtime, arch="cnn3"):
        return {"classes": 7, "labels": "fer2013", "realtime": realtime, "tta": "flip", "arch": arch,
                "publictest": {"accuracy": acc, "agreement": 0.7}}  # fmt: skip

    index = {"solo": rec(0.71, True), "ensemble": rec(0.74, False, "ensemble(cnn3, cnn3)")}
    (bundled / weights.INDEX_NAME).write_text(json.dumps(index))
    assert weights.is_ensemble("ensemble") and not weights.is_ensemble("solo")
    assert weights.leaderboard_name() == "ensemble" and weights.default_name() == "solo"
    ens = EmotionRecognizer.from_pretrained("ensemble")
    assert ens.source == "ensemble" and ens.tta == "flip"  # the recorded TTA, from the file
    assert ens.backend.name == "onnx" and ens.backend.metadata["arch"] == "ensemble(cnn3, cnn3)"
    assert EmotionRecognizer.from_pretrained("leaderboard").source == "ensemble"
    assert EmotionRecognizer.from_pretrained().source == "solo"
    index["ensemble"]["realtime"] = True  # told it runs in real time: it may be the default
    index["ensemble"]["publictest"]["agreement"] = 0.8
    (bundled / weights.INDEX_NAME).write_text(json.dumps(index))
    assert weights.default_name() == "ensemble"


def test_index_weights_records_an_ensemble(bundled, ferplus_dir):
    spec = importlib.util.spec_from_file_location(
        "index_weights", PACKAGE_DIR.parent / "scripts" / "index_weights.py"
    )
    index_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(index_weights)
    record = index_weights.score("ensemble", "flip", str(ferplus_dir))
    solo = index_weights.score("solo", "flip", str(ferplus_dir))
    assert record["arch"] == "ensemble(cnn3, cnn3)" and record["params"] == 2 * solo["params"]
    assert record["megabytes"] == round((bundled / "ensemble.onnx").stat().st_size / 1e6, 2)
    assert record["classes"] == 7 and 0 <= record["publictest"]["accuracy"] <= 1
    assert set(record["cross"]) == {"ferplus"}
    (bundled / weights.INDEX_NAME).write_text(json.dumps({"ensemble": {**record, "labels": "fer2013"}}))
    onnx = index_weights.score_onnx("ensemble", str(ferplus_dir))  # the shipped file, in the runtime
    assert onnx["backend"] == "onnx" and "int8" not in onnx  # no int8 file: fp32
    assert onnx["onnx"]["publictest"] == pytest.approx(record["publictest"]["accuracy"], abs=1e-6)
