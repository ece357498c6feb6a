"""Preprocessing shared by training, evaluation and inference, and the augmentation presets.

``preprocess_faces`` is the one eval transform: validation, test, ``evaluate`` and real-time
inference all call it with the ``preprocess`` dict stored in the checkpoint, so training and
serving cannot drift apart.

Augmentation presets live in ``conf/augment/*.yaml`` (flags below); ``build_augment`` turns one
into an albumentations pipeline, adding a step only when its flag is on (torchvision-presets
style). A preset may be given by name (``data.augment=strong``) or as its dict of flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from emo.errors import EmoError
from emo.paths import CONF_DIR

AUGMENT_DIR = CONF_DIR / "augment"


def augment_presets() -> list[str]:
    return sorted(p.stem for p in AUGMENT_DIR.glob("*.yaml"))


def resolve_augment(spec: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the flags of an augmentation preset given by name or as a mapping."""
    if spec is None:
        spec = "none"
    if isinstance(spec, str):
        path = AUGMENT_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise EmoError(
                f"unknown augmentation preset {spec!r}: choose one of {', '.join(augment_presets())}"
            )
        spec = OmegaConf.load(path)
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    return dict(spec)


@dataclass(frozen=True)
class AugmentFlags:
    """The flags of an augmentation preset (``conf/augment/*.yaml``); both the per-image
    albumentations pipeline (``build_augment``) and the batched one (``BatchAugment``) read them.

    Attributes:
        name: preset name, for logs only.
        hflip: probability of a horizontal flip (faces are near-symmetric; expressions too).
        rotate: max rotation in degrees.
        scale: max relative zoom in or out.
        shift: max translation as a fraction of the side.
        affine_p: probability of applying rotate/scale/shift.
        brightness_contrast: max relative brightness and contrast change (applied with p=0.5).
        erasing: probability of erasing one random rectangle (2-20% of the face).
        mixup: MixUp alpha (0 = off); batch-level, applied by the DataModule (``BatchMix``).
        cutmix: CutMix alpha (0 = off); batch-level, as mixup.
        mix_p: probability that a batch is mixed at all (one of MixUp/CutMix is chosen).
    """

    name: str = "custom"
    hflip: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    shift: float = 0.0
    affine_p: float = 0.0
    brightness_contrast: float = 0.0
    erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_p: float = 1.0

    @property
    def geometry(self) -> bool:
        return self.hflip > 0 or (self.affine_p > 0 and bool(self.rotate or self.scale or self.shift))


def build_augment(**flags: Any) -> Any:
    """Albumentations pipeline on (H, W) uint8 faces from ``AugmentFlags``; ``None`` when every
    per-image flag is off.

    Returns:
        An ``albumentations.Compose``, or ``None``.
    """
    f = AugmentFlags(**flags)
    import albumentations as A  # here, not at the top: the batched (GPU) path does without it

    # Steps that draw what BatchAugment draws (the stock ones differ; see emo.data.albu_steps).
    from emo.data.albu_steps import FaceFrameAffine, LogRatioErasing, MeanBrightnessContrast

    steps: list[A.BasicTransform] = []
    if f.hflip > 0:
        steps.append(A.HorizontalFlip(p=f.hflip))
    if f.affine_p > 0 and (f.rotate or f.scale or f.shift):
        steps.append(
            FaceFrameAffine(
                rotate=(-f.rotate, f.rotate),
                scale=(1 - f.scale, 1 + f.scale),
                keep_ratio=True,  # one zoom for both axes, as BatchAugment (not sx, sy apart)
                shift=f.shift,  # continuous, in the face's frame (A.Affine's: whole pixels)
                border_mode=cv2.BORDER_REFLECT,  # = grid_sample reflection; faces fill the frame
                p=f.affine_p,
            )
        )
    if f.brightness_contrast > 0:
        steps.append(MeanBrightnessContrast(f.brightness_contrast, p=0.5))
    if f.erasing > 0:
        steps.append(LogRatioErasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), fill=0, p=f.erasing))
    return A.Compose(steps) if steps else None


def preprocess_faces(faces: np.ndarray, preprocess: Mapping[str, Any]) -> torch.Tensor:
    """Grey face crops (N, H, W) or (H, W), uint8, any size -> normalised (N, 1, S, S) float.

    ``preprocess`` is the dict stored in every checkpoint: ``image_size``, ``mean``, ``std``
    (on the 0..1 scale).
    """
    faces = np.asarray(faces)
    if faces.ndim == 2:
        faces = faces[None]
    size = int(preprocess["image_size"])
    if faces.shape[1:] != (size, size):
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces])
    x = torch.from_numpy(np.ascontiguousarray(faces)).float().div_(255.0).unsqueeze(1)
    return normalize_faces(x, preprocess)  # (N, 1, S, S)


def normalize_faces(x: torch.Tensor, preprocess: Mapping[str, Any]) -> torch.Tensor:
    """(N, 1, S, S) faces on the 0..1 scale -> network input (``preprocess_faces``' last step)."""
    return (x - float(preprocess["mean"])) / float(preprocess["std"])
