"""A training checkpoint as an inference backend: what ``EmotionRecognizer.from_checkpoint`` asks
of the training side when it is given a ``.ckpt`` (the runtime itself never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from emo.models.ensemble import Ensemble
from emo.models.module import EmoModule, load_checkpoint


class TorchBackend:
    """Probabilities (B, C) from an :class:`EmoModule` (or an :class:`Ensemble` of them) in
    PyTorch, for normalised faces (B, 1, S, S); test-time views are the caller's.

    The network runs in channels-last layout: on CPU oneDNN's convolutions take ~40% less time
    for a single 48x48 face (cnn3: 0.77 vs 1.31 ms), with the same results.
    """

    name = "torch"

    def __init__(self, module: EmoModule | Ensemble, channels_last: bool = True, threads: int | None = None):
        self.module = module.eval()
        if threads:
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-model setting
        if channels_last:
            self.module.use_channels_last()

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.module.predict_proba(torch.from_numpy(np.ascontiguousarray(x)), "none").numpy()


def metadata(module: EmoModule | Ensemble) -> dict[str, Any]:
    """What the runtime reads of a model: class names, preprocessing, labels, architecture."""
    return {
        "class_names": list(module.class_names),
        "preprocess": module.preprocess,
        "labels": module.labels,
        "arch": str(module.hparams.arch),
    }


def load_backend(path: str | Path, threads: int | None = None) -> tuple[TorchBackend, dict[str, Any]]:
    """Checkpoint ``path`` in PyTorch: ``(backend, metadata)``."""
    module = load_checkpoint(path)
    return TorchBackend(module, threads=threads), metadata(module)


def cached_export(path: str | Path) -> bytes | Path:
    """Checkpoint ``path`` as ONNX (exported once and cached: ``emo.models.onnx.cached_onnx``)."""
    from emo.models.onnx import cached_onnx  # only for --backend onnx: it loads the exporter

    return cached_onnx(path, load_checkpoint(path))
