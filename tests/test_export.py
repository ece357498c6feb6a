"""ONNX export: probabilities match PyTorch's, metadata travels, weights stored as the checkpoint
held them, the onnx backend, emo-export."""

from __future__ import annotations

import lightning
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from emo import (  # noqa: E402
    EmotionRecognizer,
    export,  # noqa: E402
    weights,
)
from emo.errors import EmoError  # noqa: E402
from emo.models import onnx as onnx_export  # noqa: E402
from emo.models.module import EmoModule, load_checkpoint  # noqa: E402
from emo.samples import sample_path  # noqa: E402

PARITY = 1e-4


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    ckpt = weights.checkpoint_path(weights.default_name())
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export.main(["--ckpt", str(ckpt), "--out", str(out)]) is None
    return ckpt, out


@pytest.mark.slow  # ONNX export
def test_onnx_probabilities_match_torch(bundled):
    ckpt, onnx_file = bundled
    module = load_checkpoint(ckpt)
    assert onnx_export.parity(module, onnx_file, n=32) < PARITY
    torch_rec = EmotionRecognizer.from_checkpoint(ckpt)
    onnx_rec = EmotionRecognizer.from_checkpoint(onnx_file)
    assert onnx_rec.class_names == torch_rec.class_names and onnx_rec.preprocess == torch_rec.preprocess
    faces = np.random.default_rng(0).integers(0, 255, size=(7, 50, 50), dtype=np.uint8)
    for tta in ("none", "flip", "tencrop"):
        diff = np.abs(onnx_rec.classify(faces, tta) - torch_rec.classify(faces, tta)).max()
        assert diff < PARITY, (tta, diff)
    # the same TTA on both sides (a bundled file's recognizer defaults to its recorded one)
    photo = sample_path("astronaut")
    (a,), (b,) = onnx_rec.predict(photo, tta="none"), torch_rec.predict(photo, tta="none")
    assert a.box == b.box and a.label == b.label and np.abs(a.probs - b.probs).max() < PARITY


@pytest.mark.slow  # ONNX export
def test_onnx_backend_of_a_five_class_checkpoint_is_cached(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = EmoModule(class_names=["angry", "happy", "sad", "surprise", "neutral"]).eval()
    ckpt = tmp_path / "five.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    rec = EmotionRecognizer.from_checkpoint(ckpt, backend="onnx")
    assert rec.backend.name == "onnx" and rec.class_names == module.class_names
    x = np.random.default_rng(1).integers(0, 255, size=(4, 48, 48), dtype=np.uint8)
    ref = EmotionRecognizer.from_checkpoint(ckpt).classify(x)
    assert rec.classify(x).shape == (4, 5) and np.abs(rec.classify(x) - ref).max() < PARITY

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of using the cache")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    EmotionRecognizer.from_checkpoint(ckpt, backend="onnx")


def test_foreign_onnx_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(EmoError, match="not a readable ONNX model"):
        EmotionRecognizer.from_checkpoint(tmp_path / "junk.onnx")
    with pytest.raises(EmoError, match="not found"):
        EmotionRecognizer.from_checkpoint(tmp_path / "missing.onnx")


def _int8_weight_range(proto) -> tuple[int, int]:
    """The smallest and largest stored int8 weight of a quantised model's convolutions and linears."""
    from onnx import numpy_helper

    quantized = [
        numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("weight_quantized")
    ]
    assert quantized, "no quantised weights in the model"
    return min(int(w.min()) for w in quantized), max(int(w.max()) for w in quantized)


@pytest.mark.parametrize(
    "name", [n for n in weights.available() if (weights.WEIGHTS_DIR / f"{n}-int8.onnx").exists()]
)
def test_bundled_int8_models_keep_weights_within_7_bits(name):
    # Full-range int8 weights overflow the 16-bit saturating adds of CPUs without VNNI (AVX2):
    # the shipped files must have been quantised with reduce_range.
    import onnx

    path = weights.model_path(name, "onnx-int8")
    low, high = _int8_weight_range(onnx.load(str(path)))
    assert -64 <= low and high <= 64 and high >= 32  # 7 bits, and used


@pytest.mark.slow  # ONNX export and quantisation
def test_quantize_int8_stores_7_bit_weights_and_follows_fp32():
    import onnx

    torch.manual_seed(0)
    module = EmoModule(arch="vgg_t", net_kwargs={"widths": (8, 8, 16, 16), "depth": (1, 1, 1, 1)}).eval()
    fp32 = onnx_export.export_onnx(module)
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((64, 1, 48, 48)).astype(np.float32)
    int8 = onnx_export.quantize_int8(module, calibration)
    proto = onnx.load_from_string(int8)
    ops = {n.op_type for n in proto.graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    low, high = _int8_weight_range(proto)
    assert -64 <= low and high <= 64 and high >= 32
    assert {p.key: p.value for p in proto.metadata_props}["emo_quantization"] == "int8 static"

    import onnxruntime as ort

    x = rng.standard_normal((32, 1, 48, 48)).astype(np.float32)
    outs = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {onnx_export.INPUT_NAME: x})[0]
        for m in (fp32, int8)
    ]
    assert np.abs(outs[0] - outs[1]).max() < 0.1


def test_export_stores_weights_as_the_checkpoint_held_them_and_predicts_the_same(tmp_path):
    """fp16 and int8 storage (emo.models.pack) come back as exactly the float32 weights PyTorch
    uses: the ONNX model computes what the checkpoint does, in a file the size of the checkpoint."""
    import onnx
    from onnx import numpy_helper

    from emo.models.pack import pack

    torch.manual_seed(0)
    module = EmoModule(arch="vgg_t", net_kwargs={"widths": (8, 8, 16, 16), "depth": (1, 1, 1, 1)}).eval()
    for _i, m in enumerate(module.net.modules()):  # batch norm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    full = tmp_path / "full.ckpt"
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
         "pytorch-lightning_version": lightning.__version__},
        full,
    )  # fmt: skip
    x = np.random.default_rng(0).standard_normal((5, 1, 48, 48)).astype(np.float32)
    for how in ("fp32", "fp16", "int8"):
        ckpt = full if how == "fp32" else pack(full, tmp_path / f"{how}.ckpt", **{how: True})
        out = tmp_path / f"{how}.onnx"
        export.main(["--ckpt", str(ckpt), "--out", str(out), "--tta", "flip"])
        stored = {numpy_helper.to_array(t).dtype.name for t in onnx.load(str(out)).graph.initializer}
        assert {"fp32": "float32", "fp16": "float16", "int8": "int8"}[how] in stored
        assert out.stat().st_size < 1.2 * ckpt.stat().st_size + 20_000  # the checkpoint's storage
        assert b'File "' not in out.read_bytes()  # no stack traces (paths of this machine) inside
        rec = EmotionRecognizer.from_checkpoint(out)
        assert rec.tta == "flip" and rec.backend.metadata["labels"] == "fer2013"
        ref = load_checkpoint(ckpt).predict_proba(torch.from_numpy(x)).numpy()
        assert np.abs(rec.backend(x) - ref).max() < 1e-6, how


def test_export_refuses_an_onnx_file_and_a_folder_as_output(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export.main(["--ckpt", str(weights.model_path("vgg_s"))])
    assert "is an ONNX model already: give the .ckpt it was exported from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["--ckpt", str(weights.checkpoint_path("vgg_s")), "--out", str(tmp_path)])
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err
