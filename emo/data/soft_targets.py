"""Stored soft targets: a teacher ensemble's probabilities for every training face, as fp16.

Distilling from a file costs what plain training costs (no teacher forward passes). The file
says which training set and which classes it was made for, so a mismatch fails in one line
instead of silently pairing faces with another face's targets.

The package ships one such file, ``emo/data/targets/vgg_s.pt`` (the bundled ``vgg_s``'s flip-TTA
probabilities for FER-2013's Training faces): ``model.distill_targets=vgg_s`` names it, and
``model=cnn3`` distils from it by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from emo.errors import EmoError

FORMAT = "emo-soft-targets/1"


class SoftTargetsMismatch(EmoError):
    """A readable soft-target file made for other classes or another training set."""


def resolve_soft_targets(spec: str | Path) -> Path:
    """The file ``spec`` names: a path, or the bare name of a file the package ships
    (``vgg_s`` -> ``emo/data/targets/vgg_s.pt``)."""
    spec = str(spec)
    if "/" not in spec and "\\" not in spec and not spec.endswith(".pt"):
        shipped = Path(str(resources.files("emo.data") / "targets" / f"{spec}.pt"))
        if shipped.is_file():
            return shipped
        names = sorted(p.stem for p in shipped.parent.glob("*.pt"))
        raise EmoError(
            f"no soft targets named {spec!r} in the package (it ships {', '.join(names) or 'none'}): "
            "give a file's path"
        )
    return Path(spec)


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
    """Probabilities (N, C) float32 for this training set and these classes; ``path`` as
    :func:`resolve_soft_targets` reads it.

    Raises:
        EmoError: the file is missing or unreadable.
        SoftTargetsMismatch: it was made for other classes or another training set.
    """
    path = resolve_soft_targets(path)
    data = read_soft_targets(path)
    if list(data["class_names"]) != list(class_names):
        raise SoftTargetsMismatch(
            f"soft targets {path} are for classes {data['class_names']}, not {list(class_names)}"
        )
    probs = data["probs"].float()
    if data["fingerprint"] != train_fingerprint or len(probs) != n:
        raise SoftTargetsMismatch(
            f"soft targets {path} were made for another training set ({len(probs)} faces, fingerprint "
            f"{data['fingerprint']}; this one: {n}, {train_fingerprint}): write them again for this data"
        )
    return probs / probs.sum(1, keepdim=True)  # fp16 rounding
