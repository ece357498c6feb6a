"""The checkpoint file format: reading an emo checkpoint (a training run's, a packed one, or an
ensemble file of several) and checking that it is one, with one-line errors for anything else.
Rebuilding a network from it is ``emo.models.module.load_checkpoint``'s job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from emo.errors import EmoError
from emo.models.int8 import dequantize_checkpoint

#: The key, and its value, that mark an ensemble file: ``members`` holds one packed checkpoint
#: (``state_dict``, ``hyper_parameters``, ...) per member; the top level the shared class names,
#: preprocessing and labels (``hyper_parameters``) and the packing metrics (``emo_metrics``).
FORMAT_KEY, ENSEMBLE_FORMAT = "emo_format", "ensemble"


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise EmoError(f"checkpoint {path} not found: give a .ckpt from a run's checkpoints/ or emo/weights/")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise EmoError(
            f"checkpoint {path} is unreadable ({type(err).__name__}): re-download or re-train it"
        ) from None


def _check_contents(path: Path, ckpt: Any, which: str = "") -> None:
    """One-line errors for contents that are not an emo checkpoint (``which``: an ensemble member)."""
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not {"arch", "class_names"} <= set(hp):
        raise EmoError(
            f"{path}{which} is not an emo checkpoint (no arch/class_names inside): use one written by emo.train"
        )
    if not ckpt.get("pytorch-lightning_version"):  # what Lightning's loader reads first
        raise EmoError(
            f"{path}{which} is not an emo checkpoint (no Lightning version inside): use one written by emo.train"
        )


def _is_ensemble(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and ckpt.get(FORMAT_KEY) == ENSEMBLE_FORMAT


def _check_ensemble(path: Path, ckpt: dict) -> None:
    members = ckpt.get("members")
    if not isinstance(members, list) or not members:
        raise EmoError(f"{path} is an emo ensemble without members: pack it again with python -m emo.weights")
    for i, member in enumerate(members, 1):
        _check_contents(path, member, f" (ensemble member {i})")


def is_ensemble_file(path: str | Path) -> bool:
    """Whether ``path`` is a bundled ensemble file (``False`` for anything else, unreadable included)."""
    try:  # mmap: the weights are not read to answer
        return _is_ensemble(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # a missing, foreign or legacy-format file: not an ensemble file
        return False


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", dequantize: bool = True
) -> dict:
    """The raw contents of an emo checkpoint file, checked to be one.

    An ensemble file (``is_ensemble_file``) has no top-level ``state_dict``: its ``members`` are
    checkpoints, each checked like a file of its own. Weights packed as int8 come back in float32
    (``dequantize=False``: as stored, with their scales under ``emo.models.int8.SCALES_KEY``).

    Raises:
        EmoError: the file is missing, unreadable, or not an emo checkpoint.
    """
    path = Path(path)
    ckpt = _read(path, map_location)
    if _is_ensemble(ckpt):
        _check_ensemble(path, ckpt)
        for member in ckpt["members"] if dequantize else []:
            dequantize_checkpoint(member)
    else:
        _check_contents(path, ckpt)
        if dequantize:
            dequantize_checkpoint(ckpt)
    return ckpt
