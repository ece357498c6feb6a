"""EmotionRecognizer on paths, arrays and PIL images; classify; bad input; a 5-class checkpoint.

Runtime tests: they also run in a venv of ``pip install .`` alone (no torch); those that need a
training checkpoint skip there (``five_class_ckpt``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from emo import EmotionRecognizer, weights
from emo.errors import EmoError
from emo.inference.backends import resolve_checkpoint
from emo.inference.detect import YuNetDetector, crop_faces
from emo.inference.images import to_grey
from emo.samples import sample_path

pytestmark = pytest.mark.runtime
FIVE = ["angry", "happy", "sad", "surprise", "neutral"]


def save_module(module, path):
    """A checkpoint in the format emo.train writes (what ``read_checkpoint`` needs)."""
    import lightning
    import torch

    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def rec() -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained()


@pytest.fixture(scope="session")
def face_bgr() -> np.ndarray:
    return cv2.imread(str(sample_path("astronaut")), cv2.IMREAD_COLOR)  # (256, 256, 3)


@pytest.fixture(scope="session")
def five_class_ckpt(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="a training checkpoint needs the train extra")
    from emo.models.module import EmoModule

    torch.manual_seed(0)
    return save_module(EmoModule(class_names=FIVE).eval(), tmp_path_factory.mktemp("ckpt") / "five.ckpt")


def assert_same_faces(a, b, atol=1e-6):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert fa.box == fb.box and fa.label == fb.label
        np.testing.assert_allclose(fa.probs, fb.probs, atol=atol)


def test_default_model_is_the_best_bundled_one(rec):
    assert EmotionRecognizer.available() == weights.available()
    assert rec.source == weights.default_name()
    assert rec.backend.name == weights.recorded_backend(rec.source)  # int8 where it keeps fp32's accuracy
    assert rec.class_names == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_predict_finds_the_sample_face_and_scores_every_class(rec, face_bgr):
    (face,) = rec.predict(str(sample_path("astronaut")))
    x, y, w, h = face.box
    assert w == h and 60 <= w <= 160  # a face, not the whole 256 px image
    assert 0 <= x and x + w <= 256 and 0 <= y and y + h <= 256
    assert list(face.scores) == rec.class_names
    assert sum(face.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.label == max(face.scores, key=face.scores.get)
    assert json.loads(json.dumps(face.as_dict()))["box"] == list(face.box)


def test_every_input_kind_gives_the_same_prediction(rec, face_bgr):
    Image = pytest.importorskip("PIL.Image", reason="PIL images need Pillow (the serve extra)")

    ref = rec.predict(sample_path("astronaut"))
    grey = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)
    rgb = face_bgr[..., ::-1].copy()
    for image in (
        face_bgr,
        grey,
        grey[..., None],
        face_bgr.astype(np.float32) / 255.0,  # floats on the 0..1 scale
        face_bgr.astype(np.float64),  # floats on the 0..255 scale
        cv2.cvtColor(face_bgr, cv2.COLOR_BGR2BGRA),
        Image.fromarray(rgb),
        Image.fromarray(grey),
    ):
        assert_same_faces(rec.predict(image), ref, atol=1e-5)


def test_boxes_follow_the_face_in_large_odd_sized_frames(rec, face_bgr):
    # 1501x1001 is downscaled for detection: boxes must come back in the frame's own pixels.
    (ref,) = rec.predict(face_bgr)
    canvas = np.full((1001, 1501, 3), 90, np.uint8)
    big = cv2.resize(face_bgr, (512, 512), interpolation=cv2.INTER_CUBIC)
    canvas[333:845, 701:1213] = big
    (face,) = rec.predict(canvas)
    expected = np.array([701 + 2 * ref.box[0], 333 + 2 * ref.box[1], 2 * ref.box[2]])
    assert np.abs(np.array(face.box[:3]) - expected).max() <= 0.1 * expected[2]
    assert face.label == ref.label


@pytest.mark.parametrize("shape", [(5, 7), (37, 53, 3), (480, 641)])
def test_images_without_a_face_give_an_empty_list(rec, shape):
    noise = np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)
    assert rec.predict(noise) == []


def test_yunet_finds_the_cameraman_that_haar_misses(rec):
    assert rec.detector.name == "yunet"  # the default
    (face,) = rec.predict(sample_path("camera"))  # a face half in profile
    x, y, w, h = face.box
    assert 100 <= x + w / 2 <= 160 and 90 <= y + h / 2 <= 140 and 40 <= w <= 90  # on his face
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Haar cascades to compare with")
    haar = EmotionRecognizer.from_pretrained(detector="haar")
    assert haar.detector.name == "haar" and haar.predict(sample_path("camera")) == []
    assert len(haar.predict(sample_path("astronaut"))) == 1


def test_loading_yunet_prints_nothing_and_leaves_opencvs_log_level(capfd):
    level = cv2.utils.logging.getLogLevel()
    YuNetDetector()
    # OpenCV 5 printed "[ WARN:0@0.025] ... Targets are not supported by the new graph engine".
    assert capfd.readouterr().err == ""
    assert cv2.utils.logging.getLogLevel() == level


def test_detector_choices_and_errors(monkeypatch):
    with pytest.raises(EmoError, match="detector 'mtcnn' is not valid: choose one of yunet, haar"):
        EmotionRecognizer.from_pretrained(detector="mtcnn")
    with pytest.raises(EmoError, match="detector=yunet: .*unexpected keyword argument 'scale_factor'"):
        EmotionRecognizer.from_pretrained(detector="yunet", scale_factor=1.1)
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)  # as OpenCV 5, which has no Haar cascades
    with pytest.raises(EmoError, match="detector='haar' needs OpenCV 4 .*use detector='yunet'"):
        EmotionRecognizer.from_pretrained(detector="haar")


def test_a_list_of_images_is_one_batch_with_the_same_results(rec, face_bgr, monkeypatch):
    noise = np.random.default_rng(1).integers(0, 255, size=(120, 90), dtype=np.uint8)
    singles = [rec.predict(im) for im in (face_bgr, noise, face_bgr[::-1, ::-1])]
    calls = []
    backend = rec.backend
    monkeypatch.setattr(rec, "backend", lambda x: calls.append(len(x)) or backend(x))
    batch = rec.predict([face_bgr, noise, face_bgr[::-1, ::-1]])
    views = {"none": 1, "flip": 2, "tencrop": 10}[rec.tta]
    assert calls == [views * sum(len(s) for s in singles)]  # one forward pass for all faces
    for got, want in zip(batch, singles):
        assert_same_faces(got, want, atol=1e-5)


def test_classify_shapes_and_agreement_with_predict(rec, face_bgr):
    grey = to_grey(face_bgr)
    (face,) = rec.predict(grey)
    (crop,) = crop_faces(grey, np.array([face.box]))
    np.testing.assert_allclose(rec.classify(crop[None])[0], face.probs, atol=1e-6)
    np.testing.assert_allclose(rec.classify(crop)[0], face.probs, atol=1e-6)  # one (H, W) crop
    c = len(rec.class_names)
    faces = np.random.default_rng(0).integers(0, 255, size=(5, 61, 61), dtype=np.uint8)
    for tta in ("none", "flip", "tencrop"):
        probs = rec.classify(faces, tta=tta)
        assert probs.shape == (5, c) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    colour = np.repeat(faces[..., None], 3, axis=-1)  # (N, H, W, 3)
    np.testing.assert_allclose(rec.classify(colour), rec.classify(faces), atol=1e-6)
    mixed = rec.classify([faces[0], cv2.resize(faces[1], (17, 23))])
    assert mixed.shape == (2, c)
    np.testing.assert_allclose(mixed[0], rec.classify(faces[:1])[0], atol=1e-6)
    assert rec.classify(np.zeros((0, 48, 48), np.uint8)).shape == (0, c)
    assert not np.allclose(rec.classify(faces, "flip"), rec.classify(faces, "none"))


def test_bad_inputs_are_one_line_errors(rec, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(EmoError, match="cannot read .*corrupt.jpg"):
        rec.predict(corrupt)
    with pytest.raises(EmoError, match="not found"):
        rec.predict(tmp_path / "missing.png")
    with pytest.raises(EmoError, match="cannot read an image from list"):
        rec.predict([[1, 2, 3]])
    with pytest.raises(EmoError, match="shape"):
        rec.predict(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(EmoError, match="tta='mirror' is not valid"):
        rec.classify(np.zeros((1, 48, 48), np.uint8), tta="mirror")
    with pytest.raises(EmoError, match="backend 'tf' is not valid"):
        EmotionRecognizer.from_pretrained(backend="tf")
    with pytest.raises(EmoError, match="no bundled model named 'nope'"):
        EmotionRecognizer.from_pretrained("nope")
    with pytest.raises(EmoError, match="model file .*missing.onnx not found"):
        EmotionRecognizer.from_checkpoint(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(EmoError, match="junk.onnx is not a readable ONNX model"):
        EmotionRecognizer.from_checkpoint(tmp_path / "junk.onnx")


def test_a_foreign_checkpoint_is_a_one_line_error(tmp_path):
    torch = pytest.importorskip("torch", reason="a training checkpoint needs the train extra")
    torch.save({"foo": 1}, tmp_path / "x.ckpt")
    with pytest.raises(EmoError, match="not an emo checkpoint"):
        EmotionRecognizer.from_checkpoint(tmp_path / "x.ckpt")


@pytest.mark.parametrize("name", weights.available())
def test_bundled_models_default_to_their_recorded_tta(name):
    recorded = weights.index()[name]["tta"]  # chosen on PublicTest (scripts/index_weights.py)
    assert weights.recorded_tta(name) == recorded and recorded in ("none", "flip", "tencrop")
    rec = EmotionRecognizer.from_pretrained(name)
    assert rec.tta == recorded and f"tta={recorded}" in repr(rec)
    assert EmotionRecognizer.from_checkpoint(weights.model_path(name)).tta == recorded  # the file says so
    assert EmotionRecognizer.from_checkpoint(resolve_checkpoint(name)).tta == recorded  # as the CLIs load it
    for tta in ("none", "flip", "tencrop"):  # an explicit choice wins
        assert EmotionRecognizer.from_pretrained(name, tta=tta).tta == tta


def test_other_checkpoints_default_to_no_tta(five_class_ckpt, tmp_path):
    assert EmotionRecognizer.from_checkpoint(five_class_ckpt).tta == "none"
    assert EmotionRecognizer.from_checkpoint(five_class_ckpt, tta="flip").tta == "flip"


def test_the_tta_travels_with_the_onnx_file(tmp_path):
    copy = tmp_path / "anywhere.onnx"  # a bundled model's bytes under another name and folder
    copy.write_bytes(weights.model_path(weights.default_name()).read_bytes())
    assert (
        EmotionRecognizer.from_checkpoint(copy).tta == weights.recorded_tta(weights.default_name()) == "flip"
    )


def test_predict_and_classify_use_the_recorded_tta_unless_told_otherwise(rec, face_bgr):
    recorded = weights.recorded_tta(rec.source)
    assert rec.tta == recorded != "none"  # the default model records flip: the test needs a TTA to see
    photo = str(sample_path("astronaut"))
    (default,) = rec.predict(photo)
    (same,) = rec.predict(photo, tta=recorded)
    (plain,) = rec.predict(photo, tta="none")
    assert_same_faces([default], [same])
    # TTA moved them: compared as log-probabilities, since a confident model (happy 0.99 here)
    # moves its probabilities by less than 1e-3 and its small classes by a quarter of their size.
    assert default.box == plain.box and np.abs(np.log(default.probs) - np.log(plain.probs)).max() > 0.05
    (crop,) = crop_faces(to_grey(face_bgr), np.array([default.box]))
    np.testing.assert_allclose(rec.classify(crop), rec.classify(crop, recorded), atol=1e-6)
    np.testing.assert_allclose(rec.probs([crop]), rec.classify(crop, recorded), atol=1e-6)
    assert not np.allclose(rec.classify(crop), rec.classify(crop, "none"), atol=1e-4)
    # A recognizer built with tta="none" defaults to none; a call's own tta still wins.
    untouched = EmotionRecognizer.from_pretrained(rec.source, tta="none")
    assert untouched.tta == "none" and "tta=none" in repr(untouched)
    assert_same_faces(untouched.predict(photo), [plain])
    assert_same_faces(untouched.predict(photo, tta=recorded), [default])


def test_a_bad_tta_is_a_one_line_error(rec, five_class_ckpt):
    for make in (
        lambda: EmotionRecognizer.from_pretrained(tta="mirror"),
        lambda: EmotionRecognizer.from_checkpoint(five_class_ckpt, tta="mirror"),
        lambda: rec.predict(np.zeros((64, 64), np.uint8), tta="mirror"),
        lambda: rec.classify(np.zeros((1, 48, 48), np.uint8), tta="mirror"),
    ):
        with pytest.raises(EmoError) as err:
            make()
        assert str(err.value) == "tta='mirror' is not valid: choose one of none, flip, tencrop"


def test_emo_predict_defaults_to_the_models_recorded_tta(rec, capsys):
    from emo.inference.predict import Predictor, main, parse_args

    assert parse_args(["x.png"]).tta is None  # left to the model
    assert Predictor(rec).tta == rec.tta == weights.recorded_tta(rec.source)
    assert Predictor(rec, "none").tta == "none"
    photo = str(sample_path("astronaut"))
    by_tta = {}
    for extra in ([], ["--tta", "none"], ["--tta", rec.tta]):
        assert main([photo, "--ckpt", rec.source, "--json", *extra]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        by_tta[extra[-1] if extra else None] = row["scores"]
    (face,) = rec.predict(photo, tta=rec.tta)
    assert by_tta[None] == by_tta[rec.tta] and by_tta[None] != by_tta["none"]
    assert by_tta[None] == pytest.approx(face.scores, abs=1e-6)


def test_resolve_checkpoint_picks_a_runs_best(tmp_path, five_class_ckpt):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("best-epoch004-acc0.7000.ckpt", "best-epoch001-acc0.5000.ckpt", "last.ckpt"):
        (ckpts / name).write_bytes(five_class_ckpt.read_bytes())
        time.sleep(0.01)  # distinct modification times
    # Before the run writes metrics.json: its newest best checkpoint (the names are not read).
    assert resolve_checkpoint(tmp_path / "run").name == "best-epoch001-acc0.5000.ckpt"
    # metrics.json names the best, also after the run directory moved (an absolute path elsewhere).
    (tmp_path / "run" / "metrics.json").write_text(
        '{"checkpoint": "/elsewhere/checkpoints/best-epoch004-acc0.7000.ckpt"}'
    )
    assert resolve_checkpoint(tmp_path / "run").name == "best-epoch004-acc0.7000.ckpt"
    assert resolve_checkpoint(None) == weights.model_path(weights.default_name())
    assert resolve_checkpoint("cnn3") == weights.model_path("cnn3")
    with pytest.raises(EmoError, match="no best-"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(EmoError, match="not found"):
        resolve_checkpoint(tmp_path / "nope.ckpt")


def test_five_class_checkpoint_end_to_end(five_class_ckpt, face_bgr, capsys):
    from emo.inference.predict import main

    rec = EmotionRecognizer.from_checkpoint(five_class_ckpt)
    assert rec.class_names == FIVE
    (face,) = rec.predict(face_bgr)
    assert list(face.scores) == FIVE and face.label in FIVE
    assert rec.classify(np.zeros((3, 48, 48), np.uint8)).shape == (3, 5)
    assert main([str(sample_path("astronaut")), "--ckpt", str(five_class_ckpt), "--csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split(",")[-5:] == FIVE
    assert row.split(",")[7] == face.label


@pytest.mark.parametrize("tta", ["none", "tencrop"])
def test_classify_works_in_chunks_with_the_same_results(rec, tta, monkeypatch):
    from emo.inference import recognizer

    crops = np.random.default_rng(3).integers(0, 256, size=(23, 48, 48), dtype=np.uint8)
    whole = rec.classify(crops, tta)
    sizes = []
    backend = rec.backend
    monkeypatch.setattr(rec, "backend", lambda x: sizes.append(len(x)) or backend(x))
    monkeypatch.setattr(recognizer, "CHUNK_VIEWS", 20)
    chunked = rec.classify(crops, tta)
    per_call = 20 if tta == "none" else 2  # faces per forward pass: 20 views / 10 views per face
    sizes = [n // (1 if tta == "none" else 10) for n in sizes]  # network inputs -> faces
    assert sizes == [per_call] * (23 // per_call) + [23 % per_call] * bool(23 % per_call)
    assert np.allclose(chunked, whole, atol=1e-5)


@pytest.mark.slow
def test_memory_stays_bounded_for_10000_crops_with_tencrop():
    # In a fresh process, with the peak resident size (VmHWM) restarted once the crops exist:
    # getrusage's ru_maxrss would include the parent's peak (Linux keeps it across fork+exec),
    # which made the test depend on what ran before it in the same pytest. The network is a narrow
    # vgg_t (4-8 filters) so the test takes seconds: what used to grow (every view of every crop,
    # every view's activations) grows the same with any network; unchunked, these 100,000 views
    # would hold 0.9 GB of input and 3.7 GB of first-layer activations.
    import subprocess
    import sys

    pytest.importorskip("torch", reason="the narrow test network is built in PyTorch (the train extra)")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc to restart the peak resident size")
    code = (
        "import numpy as np, torch\n"
        "from emo.models.module import EmoModule\n"
        "from emo.models.backend import TorchBackend\n"
        "from emo.inference.recognizer import EmotionRecognizer\n"
        "torch.set_num_threads(2)\n"
        "m = EmoModule(arch='vgg_t', net_kwargs={'widths': (4, 8, 8, 8), 'depth': (1, 1, 1, 1)})\n"
        "rec = EmotionRecognizer(TorchBackend(m), m.class_names, m.preprocess)\n"
        "crops = np.random.default_rng(0).integers(0, 256, size=(10000, 48, 48), dtype=np.uint8)\n"
        "def peak():\n"
        "    status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "    return int(status.split()[0]) // 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"  # restart the peak from here
        "before = peak()\n"
        "p = rec.classify(crops, tta='tencrop')\n"
        "assert p.shape == (10000, 7) and np.allclose(p.sum(1), 1, atol=1e-4)\n"
        "print(before, peak())\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
        cwd=root,
        env=env,
    )
    before_mb, peak_mb = (int(v) for v in out.stdout.split()[-2:])
    assert peak_mb < 2048, f"peak resident memory {peak_mb} MB"
    assert peak_mb - before_mb < 500, f"classify added {peak_mb - before_mb} MB"


def test_the_bundled_int8_model_agrees_with_fp32(rec):
    int8 = EmotionRecognizer.from_pretrained("vgg_s", backend="onnx-int8")
    assert int8.source == "vgg_s" and int8.backend.name == "onnx-int8"
    assert int8.tta == weights.recorded_tta("vgg_s")  # the bundled model's TTA, in any runtime
    bundled_int8 = weights.model_path("vgg_s", "onnx-int8")
    assert bundled_int8.name == "vgg_s-int8.onnx"
    assert EmotionRecognizer.from_checkpoint(bundled_int8).tta == int8.tta
    fp32 = EmotionRecognizer.from_pretrained("vgg_s", backend="onnx")
    assert fp32.backend.name == "onnx"
    crops = np.random.default_rng(5).integers(0, 256, size=(16, 48, 48), dtype=np.uint8)
    a, b = int8.classify(crops), fp32.classify(crops)
    assert np.abs(a - b).max() < 0.1 and (a.argmax(1) == b.argmax(1)).mean() >= 0.8
    with pytest.raises(EmoError, match="bundled model 'vgg_fer' has no int8 file: use backend onnx"):
        EmotionRecognizer.from_pretrained("vgg_fer", backend="onnx-int8")
    with pytest.raises(EmoError, match="bundled models are ONNX files: use backend auto"):
        EmotionRecognizer.from_pretrained("vgg_s", backend="torch")


# ------------------------------------------------------------------ one bad file, one line
def test_empty_unreadable_and_extreme_images_are_one_line_errors_or_no_faces(rec, tmp_path):
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    with pytest.raises(EmoError, match="cannot read .*zero.png: the file is empty"):
        rec.predict(empty)
    for shape in [(2, 4000), (1, 20000), (4000, 2), (1, 1)]:  # OpenCV's resize failed on these
        assert rec.predict(np.full(shape, 128, np.uint8)) == []


def test_one_bad_file_never_stops_a_batch_and_writes_are_checked(tmp_path, capsys, monkeypatch):
    from emo.inference import predict

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(sample_path("astronaut").read_bytes())
    (photos / "b.png").write_bytes(b"")  # zero bytes
    own = sample_path("camera").read_bytes()
    (photos / "a_annotated.png").write_bytes(own)  # the user's own file of that name
    code = predict.main([str(photos), "--save-dir", str(photos), "--json"])
    out = capsys.readouterr()
    assert code == 1  # something failed ...
    assert {Path(r["file"]).name for r in json.loads(out.out)} == {
        "a.png",
        "a_annotated.png",
    }  # ... not the rest
    assert "error: cannot read" in out.err and "b.png: the file is empty" in out.err
    assert (photos / "a_annotated.png").read_bytes() == own  # never written over
    assert (photos / "a-1_annotated.png").is_file() and "wrote 2 annotated file(s)" in out.err
    # A write that fails is an error, not "wrote": the batch goes on.
    monkeypatch.setattr(predict.cv2, "imwrite", lambda *args: False)
    assert predict.main([str(photos / "a.png"), "--save-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "could not write" in err and "wrote" not in err.replace("could not write", "")
    # A folder that cannot be one fails before any work, in one line.
    with pytest.raises(SystemExit):
        predict.main([str(photos / "a.png"), "--save-dir", str(photos / "a.png")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: --save-dir {photos / 'a.png'} is a file: give a folder for the annotated copies"
