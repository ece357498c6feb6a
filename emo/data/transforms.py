"""Preprocessing shared by training, evaluation and inference, and the augmentation presets.

``preprocess_faces`` is the one eval transform: validation, test, ``evaluate`` and real-time
inference all call it with the :class:`Preprocess` stored in the checkpoint, so training and
serving cannot drift apart.

Augmentation presets live in ``conf/augment/*.yaml`` (the flags of :class:`AugmentFlags`), chosen
by Hydra's augment group; ``build_augment`` turns one into an albumentations pipeline, adding a
step only when its flag is on (torchvision-presets style).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch

from emo.errors import EmoError
from emo.inference.preprocess import Preprocess
from emo.inference.preprocess import preprocess_faces as _preprocess_faces


def resolve_augment(spec: AugmentFlags | Mapping[str, Any] | None) -> dict[str, Any]:
    """The flags of an augmentation preset as a dict (``None``: no augmentation).

    Presets are chosen by name only through Hydra's augment group (``conf/augment/*.yaml``:
    ``augment=strong``, or ``data.augment=strong`` on the command line), which hands the
    DataModule their flags.
    """
    if spec is None:
        return {"name": "none"}
    if isinstance(spec, str):
        raise EmoError(
            f"augment={spec!r}: a preset is chosen by name with Hydra's augment group (augment={spec} "
            "or data.augment=" + spec + " on the command line); from Python give its flags "
            "(emo.cli.compose([...]).data.augment, or a dict of AugmentFlags' fields)"
        )
    if isinstance(spec, AugmentFlags):
        return asdict(spec)
    flags = {str(k): v for k, v in spec.items()}
    unknown = sorted(set(flags) - {f.name for f in fields(AugmentFlags)})
    if unknown:
        raise EmoError(f"data.augment has unknown flags {unknown}: see conf/augment/strong.yaml")
    return flags


# Ranges of the camera steps, for a 48x48 face cut from a webcam or video frame by a detector
# (emo.inference.detect: square boxes, resized to 48 px). Both engines read these.
#: Perspective corner moves (fraction of the side): a head turned or tilted 10-20 degrees from
#: the camera makes one side of the face a few percent shorter or longer than the other.
PERSPECTIVE_SCALE = 0.05
#: Detector box off: its centre by up to 5% of its side per axis, its side by up to 10% (boxes of
#: two detectors on the same face, or of one detector on successive frames, differ about so much).
CROP_SHIFT = 0.05
CROP_ZOOM = 0.1
#: Light gradient: 1 -/+ a from the centre to the middle of an edge; a = 0.4 is a 2.3:1 ratio from
#: the dark to the lit side (a lamp or window to one side; studio key:fill is 2:1 to 4:1).
LIGHTING = (0.1, 0.4)
#: Blur sigma in pixels at 48 px: a face of 25-35 px in the frame upscaled to 48, or defocus or
#: motion blur of 2-4 px on a 100-150 px face scaled down, is this soft.
BLUR_SIGMA = (0.5, 1.5)
#: Noise std on the 0..1 scale (2.5-13 grey levels): webcam sensor noise is 2-5 levels in good
#: light and 10-15 in a dim room; scaling a face down to 48 px averages some of it away, scaling a
#: small face up keeps it.
NOISE_STD = (0.01, 0.05)
#: JPEG quality (inclusive): streamed or recorded video of a small face, whose 8-px blocks are a
#: sixth of the 48-px face; below 30 the face is mostly blocks, above 80 there is little to see.
JPEG_QUALITY = (30, 80)


@dataclass(frozen=True)
class AugmentFlags:
    """The flags of an augmentation preset (``conf/augment/*.yaml``); both the per-image
    albumentations pipeline (``build_augment``) and the batched one (``BatchAugment``) read them.

    The camera steps (``perspective`` to ``jpeg``) add what real frames have and FER-2013's faces
    lack; each is a probability, 0 (off) by default, with its range in a module constant above.

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
        perspective: probability of a small perspective warp (pose): each corner of the face moves
            by up to ``perspective_scale`` of the side in x and y (uniform).
        perspective_scale: the largest corner move, as a fraction of the side.
        crop_jitter: probability of framing the face as a detector box that is off: an extra
            shift (``CROP_SHIFT``) and zoom (``CROP_ZOOM``), no rotation (boxes are upright).
        lighting: probability of uneven light: the face multiplied by a linear gradient in a random
            direction, ``1 + a * d`` with ``d`` the distance from the centre along the direction in
            half sides and ``a`` uniform in ``LIGHTING``.
        blur: probability of a Gaussian blur with sigma uniform in ``BLUR_SIGMA`` pixels.
        noise: probability of Gaussian sensor noise, per pixel, std uniform in ``NOISE_STD``.
        jpeg: probability of JPEG re-compression, quality uniform in ``JPEG_QUALITY``.
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
    perspective: float = 0.0
    perspective_scale: float = PERSPECTIVE_SCALE
    crop_jitter: float = 0.0
    lighting: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0

    @property
    def geometry(self) -> bool:
        return self.hflip > 0 or (self.affine_p > 0 and bool(self.rotate or self.scale or self.shift))

    @property
    def per_image(self) -> bool:
        """Whether any step of ``build_augment`` is on (MixUp/CutMix are batch-level)."""
        other = (self.perspective, self.crop_jitter, self.lighting, self.brightness_contrast)
        return self.geometry or any(p > 0 for p in (*other, self.erasing, self.blur, self.noise, self.jpeg))


def build_augment(**flags: Any) -> Any:
    """Albumentations pipeline on (H, W) uint8 faces from ``AugmentFlags``; ``None`` when every
    per-image flag is off.

    Returns:
        An ``albumentations.Compose``, or ``None``.
    """
    f = AugmentFlags(**flags)
    if not f.per_image:
        return None  # before the import: scoring and the batched (GPU) path do without albumentations
    import albumentations as A  # here, not at the top, for the same reason

    # Steps that draw what BatchAugment draws (the stock ones differ; see emo.data.albu_steps).
    from emo.data.albu_steps import (
        CentredIllumination,
        CornerPerspective,
        FaceFrameAffine,
        LogRatioErasing,
        MeanBrightnessContrast,
        RoundedGaussNoise,
    )

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
    # Camera steps, in the order a frame meets them: pose, the detector's box, light on the face
    # (before brightness/contrast and occlusion), then the camera's optics, sensor and codec.
    if f.perspective > 0:
        steps.append(CornerPerspective(f.perspective_scale, border_mode=cv2.BORDER_REFLECT, p=f.perspective))
    if f.crop_jitter > 0:
        steps.append(
            FaceFrameAffine(
                rotate=(0, 0),
                scale=(1 - CROP_ZOOM, 1 + CROP_ZOOM),
                keep_ratio=True,
                shift=CROP_SHIFT,
                border_mode=cv2.BORDER_REFLECT,
                p=f.crop_jitter,
            )
        )
    if f.lighting > 0:
        steps.append(CentredIllumination(LIGHTING, p=f.lighting))
    if f.brightness_contrast > 0:
        steps.append(MeanBrightnessContrast(f.brightness_contrast, p=0.5))
    if f.erasing > 0:
        steps.append(LogRatioErasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), fill=0, p=f.erasing))
    if f.blur > 0:  # kernel size from sigma (blur_limit=0): 2 * int(3.5 sigma) + 1
        steps.append(A.GaussianBlur(blur_limit=0, sigma_limit=BLUR_SIGMA, p=f.blur))
    if f.noise > 0:
        steps.append(RoundedGaussNoise(std_range=NOISE_STD, mean_range=(0, 0), p=f.noise))
    if f.jpeg > 0:
        steps.append(A.ImageCompression(compression_type="jpeg", quality_range=JPEG_QUALITY, p=f.jpeg))
    return A.Compose(steps) if steps else None


def preprocess_faces(faces: np.ndarray, preprocess: Preprocess | Mapping[str, Any]) -> torch.Tensor:
    """``emo.inference.preprocess.preprocess_faces`` (the one eval transform) as a tensor:
    grey crops (N, H, W) or (H, W), uint8, any size -> normalised (N, 1, S, S) float32."""
    return torch.from_numpy(np.ascontiguousarray(_preprocess_faces(faces, preprocess)))


def normalize_faces(x: torch.Tensor, preprocess: Preprocess | Mapping[str, Any]) -> torch.Tensor:
    """(N, 1, S, S) faces on the 0..1 scale -> network input (``preprocess_faces``' last step)."""
    pre = Preprocess.of(preprocess)
    return (x - pre.mean) / pre.std
