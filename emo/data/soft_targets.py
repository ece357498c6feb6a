"""Stored soft targets: a teacher ensemble's probabilities for every training face, as fp16.

Distilling from a file costs what plain training costs (no teacher forward passes). The file
says which training set and which classes it was made for, so a mismatch fails in one line
instead of silently pairing faces with another face's targets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emo.errors import EmoError

FORMAT = "emo-soft-targets/1"


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """Hash of the training faces and their labels, in order (what the targets line up with)."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def save_soft_targets(
    path: str | Path, probs: torch.Tensor, class_names: Sequence[str], train_fingerprint: str, **meta
) -> Path:
    """Write probabilities (N, C) as fp16 with the class list, the training-set fingerprint and
    ``meta`` (members, TTA, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "probs": probs.detach().to(torch.float16).cpu(),
            "class_names": list(class_names),
            "fingerprint": train_fingerprint,
            "meta": meta,
        },
        path,
    )
    return path


def read_soft_targets(path: str | Path) -> dict:
    """The raw contents of a soft-target file, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise EmoError(f"soft targets {path} not found: write them with `python -m emo.distill targets`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise EmoError(
            f"soft targets {path} are unreadable ({type(err).__name__}): write them again"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EmoError(
            f"{path} is not an emo soft-target file: write one with `python -m emo.distill targets`"
        )
    return data


def load_soft_targets(
    path: str | Path, class_names: Sequence[str], train_fingerprint: str, n: int
) -> torch.Tensor:
    """Probabilities (N, C) float32 for this training set and these classes.

    Raises:
        EmoError: the file is missing or was made for other classes or another training set.
    """
    data = read_soft_targets(path)
    if list(data["class_names"]) != list(class_names):
        raise EmoError(f"soft targets {path} are for classes {data['class_names']}, not {list(class_names)}")
    probs = data["probs"].float()
    if data["fingerprint"] != train_fingerprint or len(probs) != n:
        raise EmoError(
            f"soft targets {path} were made for another training set ({len(probs)} faces, fingerprint "
            f"{data['fingerprint']}; this one: {n}, {train_fingerprint}): write them again for this data"
        )
    return probs / probs.sum(1, keepdim=True)  # fp16 rounding
