"""The runtime as ``pip install emo`` installs it: numpy, OpenCV and onnxruntime, no training stack.

Every test here also runs in CI's venv of ``pip install .`` alone; the subprocess tests make the
training stack unimportable on top, so they hold in the full dev venv too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import emo
from emo import EmotionRecognizer, weights
from emo.errors import EmoError
from emo.inference.preprocess import TTA_MODES, n_views, preprocess_faces, tta_views
from emo.samples import sample_path

pytestmark = pytest.mark.runtime
#: What only the train extra installs (and what the runtime must never import).
TRAINING_STACK = ["torch", "torchvision", "lightning", "hydra", "omegaconf", "torchmetrics",
                  "tensorboard", "albumentations", "matplotlib", "scipy", "onnx", "onnxscript"]  # fmt: skip
#: Run before the code under test: importing any of the training stack fails as if not installed.
BLOCK = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAINING_STACK!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def run_without_training_stack(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter on the emo this test imports (the checkout, or the runtime
    venv's installed copy), from a folder that holds no other emo."""
    env = {**os.environ, "PYTHONPATH": str(Path(emo.__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tempfile.gettempdir(),
    )


def test_every_bundled_model_predicts_without_the_training_stack():
    code = """
import json, sys
from emo import EmotionRecognizer, weights
from emo.samples import sample_path
out = {}
for name in weights.available():
    for backend in ("onnx", "onnx-int8") if weights.info(name).get("int8") else ("onnx",):
        rec = EmotionRecognizer.from_pretrained(name, backend=backend)
        (face,) = rec.predict(sample_path("astronaut"))
        out[f"{name}/{backend}"] = [face.label, len(face.scores), rec.tta]
default = EmotionRecognizer.from_pretrained()
out["default"] = [default.source, default.backend.name]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in STACK)
print(json.dumps({"models": out, "heavy": heavy}))
""".replace("STACK", repr(TRAINING_STACK))
    done = run_without_training_stack(code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    models = result["models"]
    assert models["default"] == [weights.default_name(), weights.recorded_backend(weights.default_name())]
    for name in weights.available():
        label, n_classes, tta = models[f"{name}/onnx"]
        assert n_classes == weights.index()[name]["classes"] and tta == weights.recorded_tta(name)
        assert label == "happy", name  # the astronaut's smile, in every model (FER+'s too)


def test_a_checkpoint_without_torch_names_both_fixes(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"not read: the runtime needs torch before it opens a checkpoint")
    code = """
import sys
from emo import EmotionRecognizer
from emo.errors import EmoError
try:
    EmotionRecognizer.from_checkpoint(sys.argv[1])
except EmoError as err:
    print(err)
"""
    done = run_without_training_stack(code, str(ckpt))
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    assert line == (
        f"{ckpt} is a PyTorch checkpoint, and torch is not installed: export it to ONNX with "
        f"emo-export --ckpt {ckpt} --out model.onnx where torch is installed, or pip install 'emo[train]'"
    )


def test_emo_predict_runs_without_the_training_stack(tmp_path):
    code = "from emo.inference.predict import cli; cli()"
    photo = str(sample_path("astronaut"))
    done = run_without_training_stack(code, photo, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["label"] == "happy" and len(row["scores"]) == 7
    done = run_without_training_stack(
        code, str(tmp_path / "run.ckpt"), "--ckpt", str(tmp_path / "missing.ckpt")
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_one_line_errors_in_the_runtime(tmp_path):
    with pytest.raises(
        EmoError, match="no bundled model named 'nope': choose one of .*default, fast, leaderboard"
    ):
        EmotionRecognizer.from_pretrained("nope")
    with pytest.raises(EmoError, match=f"model {tmp_path / 'x.onnx'} not found"):
        EmotionRecognizer.load(tmp_path / "x.onnx")
    with pytest.raises(EmoError, match="image .*missing.png not found: check the path"):
        EmotionRecognizer.from_pretrained().predict(tmp_path / "missing.png")
    unreadable = tmp_path / "bad.png"
    unreadable.write_bytes(b"\x89PNG not really")
    with pytest.raises(EmoError, match="cannot read .*bad.png"):
        EmotionRecognizer.from_pretrained().predict(unreadable)


def _onnx_model(tmp_path: Path, metadata: dict[str, str], side: int = 48) -> Path:
    """A tiny model written with onnxruntime's own helper-free format: built by onnx where it is
    installed (the dev venv), else skipped."""
    onnx = pytest.importorskip("onnx", reason="building a test model needs the onnx package")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["faces"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Concat", ["flat"] * 7, ["logits"], axis=1),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_files_without_emo_metadata_or_of_the_wrong_shape_are_one_line_errors(tmp_path):
    classes = json.dumps(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])
    plain = _onnx_model(tmp_path, {})
    with pytest.raises(EmoError) as err:
        EmotionRecognizer.from_checkpoint(plain)
    assert str(err.value) == f"{plain} has no emo metadata (class names): export it with emo-export"
    wrong = _onnx_model(tmp_path, {"emo_class_names": classes, "emo_preprocess": "{}"}, side=64)
    with pytest.raises(
        EmoError, match="takes .*64.* but its metadata says \\(N, 1, 48, 48\\) faces to 7 classes"
    ):
        EmotionRecognizer.from_checkpoint(wrong)
    fine = _onnx_model(tmp_path, {"emo_class_names": classes, "emo_preprocess": "{}"})
    rec = EmotionRecognizer.from_checkpoint(fine)
    assert rec.tta == "none" and rec.classify(np.zeros((2, 30, 30), np.uint8)).shape == (2, 7)


def test_numpy_test_time_views_match_pytorchs():
    torch = pytest.importorskip("torch", reason="the comparison needs the training side's views")
    from emo.models.module import tta_views as torch_views

    x = np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype(np.float32)
    for tta in TTA_MODES:
        ours, theirs = tta_views(x, tta), torch_views(torch.from_numpy(x), tta).numpy()
        assert ours.shape == theirs.shape == (n_views(tta), 3, 1, 48, 48)
        np.testing.assert_allclose(ours, theirs, atol=1e-5 if tta == "tencrop" else 0)  # bilinear: float32


def test_numpy_preprocessing_is_the_training_transform():
    pytest.importorskip("torch", reason="the comparison needs the training side's transform")
    from emo.data.transforms import preprocess_faces as training_transform

    faces = np.random.default_rng(1).integers(0, 256, size=(4, 61, 61), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_faces(faces, None), training_transform(faces, None).numpy())


def test_recognizer_views_go_through_the_network_in_one_batch(monkeypatch):
    rec = EmotionRecognizer.from_pretrained(backend="onnx")
    seen = []
    backend = rec.backend
    monkeypatch.setattr(rec, "backend", lambda x: seen.append(x.shape) or backend(x))
    crops = np.random.default_rng(2).integers(0, 256, size=(3, 48, 48), dtype=np.uint8)
    rec.classify(crops, "tencrop")
    assert seen == [(30, 1, 48, 48)]


# ------------------------------------------------------------------------------- emo COMMAND
def test_emo_lists_every_subcommand_and_its_version(capsys):
    from emo.__main__ import SUBCOMMANDS, main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("predict", "realtime", "demo", "serve", "train", "evaluate", "export", "summarize"):
        assert f"\n  {name} " in listed and name in SUBCOMMANDS
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"emo {emo.__version__}"
    with pytest.raises(SystemExit) as done:
        main(["nope"])
    assert done.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: emo has no subcommand 'nope': choose one of predict, realtime")


def test_emo_predict_is_emo_predict(capsys):
    from emo.__main__ import main
    from emo.inference import predict

    photo = str(sample_path("astronaut"))
    assert main(["predict", photo, "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert predict.main([photo, "--json"]) == 0
    assert ours == json.loads(capsys.readouterr().out) and ours[0]["label"] == "happy"


def test_emo_train_without_the_training_stack_names_the_extra():
    done = run_without_training_stack("from emo.__main__ import main; main()", "train", "model=cnn3")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: emo train needs ") and line.endswith("pip install 'emo[train]'")
    done = run_without_training_stack("from emo.__main__ import main; main()", "predict", "--help")
    assert done.returncode == 0 and "usage: emo predict" in done.stdout  # the runtime's doors work
