"""Where probabilities come from, and which model file a name, path or run directory means.

Every bundled model and every ``emo-export`` file is ONNX, run by onnxruntime with the class
names, preprocessing and test-time augmentation stored inside it: numpy, OpenCV and onnxruntime
are all the runtime needs. A training run's ``.ckpt`` runs in PyTorch instead (``backend torch``),
which only the ``train`` extra installs: it is imported when such a file is opened, never before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emo import weights
from emo.errors import EmoError
from emo.inference.preprocess import TTA_MODES, Preprocess

#: ``auto``: a bundled model's recorded backend (``emo/weights/index.json``: int8 where it keeps
#: fp32's PublicTest accuracy within 0.3 points), onnxruntime for any other ``.onnx``, PyTorch for
#: a ``.ckpt``. ``onnx``: the fp32 ONNX model; ``onnx-int8``: its ``<name>-int8.onnx`` beside it;
#: ``torch``: a checkpoint in PyTorch (the ``train`` extra).
BACKENDS = ("auto", "onnx", "onnx-int8", "torch")
TRAIN_HINT = "pip install 'emo[train]'"
#: The packages only the ``train`` extra installs: a checkpoint that needs one says so in one line.
TRAIN_PACKAGES = {"torch", "torchvision", "lightning", "torchmetrics", "hydra", "omegaconf", "albumentations"}


def model_metadata(session: Any, path: str | Path = "this ONNX model") -> dict[str, Any]:
    """What an exported model (an onnxruntime session) says of itself: ``class_names``,
    ``preprocess``, and where recorded ``labels``, ``arch``, ``tta`` and ``quantization``.

    Raises:
        EmoError: the model has no emo metadata, or its input or output shape does not fit it.
    """
    meta = session.get_modelmeta().custom_metadata_map
    if "emo_class_names" not in meta or "emo_preprocess" not in meta:
        raise EmoError(f"{path} has no emo metadata (class names): export it with emo-export")
    out: dict[str, Any] = {
        "class_names": json.loads(meta["emo_class_names"]),
        "preprocess": Preprocess.of(json.loads(meta["emo_preprocess"])),
    }
    for key in ("labels", "arch", "tta", "quantization"):
        if f"emo_{key}" in meta:
            out[key] = meta[f"emo_{key}"]
    if out.get("tta", "none") not in TTA_MODES:
        raise EmoError(f"{path} records tta={out['tta']!r}, which this emo does not know: re-export it")
    size, classes = out["preprocess"].image_size, len(out["class_names"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    in_shape, out_shape = inputs[0].shape, outputs[0].shape

    def fit(dims: list, wanted: tuple) -> bool:  # a named (dynamic) dimension fits anything
        return len(dims) == len(wanted) and all(
            isinstance(w, str) or not isinstance(d, int) or d == w for d, w in zip(dims, wanted)
        )

    fits = len(inputs) == 1 and fit(in_shape, ("N", 1, size, size)) and fit(out_shape, ("N", classes))
    if not fits:
        raise EmoError(
            f"{path} takes {in_shape} and gives {out_shape}, but its metadata says "
            f"(N, 1, {size}, {size}) faces to {classes} classes: re-export it with emo-export"
        )
    return out


class OnnxBackend:
    """Probabilities (B, C) from an ONNX model (``emo-export``, or a bundled one) in onnxruntime,
    for normalised faces (B, 1, S, S). Test-time views are the caller's (``tta_views``)."""

    name = "onnx"

    def __init__(self, model: bytes | str | Path, threads: int | None = None):
        import onnxruntime as ort  # here: `import emo.inference` alone needs no session

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else str(model)
        where = "the ONNX model" if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own error types
            raise EmoError(
                f"{where} is not a readable ONNX model ({type(err).__name__}): re-export it"
            ) from None
        self.metadata = model_metadata(self.session, where)
        self.input_name = self.session.get_inputs()[0].name
        if self.metadata.get("quantization"):
            self.name = "onnx-int8"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def load_torch_backend(path: Path, backend: str, threads: int | None) -> tuple[Any, dict[str, Any]]:
    """A training checkpoint as ``(backend, metadata)``: in PyTorch, or for ``backend="onnx"`` its
    ONNX export (made once, cached). The training side (``emo.models.backend``) is imported here,
    when a ``.ckpt`` is opened, so that the runtime itself never needs torch.

    Raises:
        EmoError: the ``train`` extra is not installed (naming both fixes), or the file is unusable.
    """
    try:
        # Function-local: the one path from the runtime to the training side, taken for a .ckpt.
        from emo.models import backend as torch_side
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAIN_PACKAGES:
            raise
        raise EmoError(
            f"{path} is a PyTorch checkpoint, and {err.name} is not installed: export it to ONNX "
            f"with emo-export --ckpt {path} --out model.onnx where torch is installed, or {TRAIN_HINT}"
        ) from None
    if backend == "onnx":
        engine = OnnxBackend(torch_side.cached_export(path), threads)
        return engine, engine.metadata
    return torch_side.load_backend(path, threads)


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The best checkpoint a training run's ``metrics.json`` names (also when the run directory
    has moved since: then found by its name under ``checkpoints/``); ``None`` when the file or
    the checkpoint is missing."""
    run_dir = Path(run_dir)
    try:
        best = json.loads((run_dir / "metrics.json").read_text()).get("checkpoint")
    except (OSError, ValueError):
        return None
    if not best or not isinstance(best, str):
        return None
    for candidate in (Path(best), run_dir / "checkpoints" / Path(best).name):
        if candidate.is_file():
            return candidate
    return None


def resolve_checkpoint(spec: str | Path | None = None) -> Path:
    """The model file meant by a bundled name (or ``default``/``leaderboard``: its ONNX file), a
    ``.onnx``/``.ckpt`` file or a training run directory (the best checkpoint its ``metrics.json``
    names; for a run that has not written one yet, its newest ``best-*.ckpt``); ``None``: the
    default bundled model.

    Raises:
        EmoError: nothing of that name, or a run directory without a best checkpoint.
    """
    if spec is None or str(spec) == "":
        return weights.model_path("default")
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
        return weights.model_path(str(spec))
    raise EmoError(
        f"model {spec} not found: give a .onnx or .ckpt file, a training run directory "
        f"or a bundled name ({', '.join([*weights.available(), *weights.ALIASES])})"
    )
