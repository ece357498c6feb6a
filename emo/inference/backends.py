"""Where probabilities come from: a checkpoint in PyTorch or an ONNX model in onnxruntime, and
which model file a name, path or run directory means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from emo import weights
from emo.errors import EmoError
from emo.models.module import EmoModule, Ensemble, tta_views
from emo.report.metrics import best_checkpoint

INSTALL_HINT = "pip install 'emo[onnx]' (onnx, onnxruntime, onnxscript), or use --backend torch"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EmoError(f"onnxruntime is not installed: {INSTALL_HINT}") from None
    return onnxruntime


def onnx_metadata(session) -> tuple[list[str], dict]:
    """Class names and preprocessing stored in an exported model (an onnxruntime session)."""
    meta = session.get_modelmeta().custom_metadata_map
    if "emo_class_names" not in meta or "emo_preprocess" not in meta:
        raise EmoError("this ONNX model has no emo metadata (class names): export it with emo-export")
    return json.loads(meta["emo_class_names"]), json.loads(meta["emo_preprocess"])


class TorchBackend:
    """Probabilities from an :class:`EmoModule` (or an :class:`Ensemble` of them) in PyTorch.

    The network runs in channels-last layout: on CPU oneDNN's convolutions take ~40% less time
    for a single 48x48 face (cnn3: 0.77 vs 1.31 ms), with the same results.
    """

    name = "torch"

    def __init__(self, module: EmoModule | Ensemble, channels_last: bool = True):
        self.module = module.eval()
        if channels_last:
            self.module.use_channels_last()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, tta: str = "none") -> np.ndarray:
        return self.module.predict_proba(x, tta).numpy()  # (N, 1, S, S) -> (N, C)


class OnnxBackend:
    """Probabilities from an ONNX model (``emo-export``) in onnxruntime."""

    name = "onnx"

    def __init__(self, model: bytes | str | Path, threads: int | None = None):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor, tta: str = "none") -> np.ndarray:
        views = tta_views(x, tta)  # (V, N, 1, S, S): the same views as EmoModule.predict_proba
        v, n = views.shape[:2]
        probs = self.session.run(None, {self.input_name: views.flatten(0, 1).numpy()})[0]
        return probs.reshape(v, n, -1).mean(0)


#: ``onnx-int8``: the checkpoint's int8 model beside it (``<name>-int8.onnx``, from
#: ``emo-export --int8``; the bundled vgg_s has one), in onnxruntime.
BACKENDS = ("torch", "onnx", "onnx-int8")


def resolve_checkpoint(spec: str | Path | None = None) -> Path:
    """The model file meant by a bundled name (or ``default``/``leaderboard``), a ``.ckpt``/``.onnx``
    file or a training run directory (the best checkpoint its ``metrics.json`` names; for a run
    that has not written one yet, its newest ``best-*.ckpt``); ``None``: the default bundled
    weights.

    Raises:
        EmoError: nothing of that name, or a run directory without a best checkpoint.
    """
    if spec is None or str(spec) == "":
        return weights.weights_path(weights.default_name())
    path = Path(spec)
    if path.is_dir():
        recorded = best_checkpoint(path)
        if recorded is not None:
            return recorded
        ckpts = list((path / "checkpoints").glob("best*.ckpt")) or list(path.glob("best*.ckpt"))
        if not ckpts:
            raise EmoError(
                f"no best-*.ckpt in {path} or {path / 'checkpoints'}: give an emo.train run directory"
            )
        return max(ckpts, key=lambda p: p.stat().st_mtime)  # ModelCheckpoint keeps one by default
    if path.is_file():
        return path
    if str(spec) in (*weights.available(), *weights.ALIASES):
        return weights.weights_path(str(spec))
    raise EmoError(
        f"model {spec} not found: give a .ckpt or .onnx file, a training run directory "
        f"or a bundled name ({', '.join([*weights.available(), *weights.ALIASES])})"
    )
