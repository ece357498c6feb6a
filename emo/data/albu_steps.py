"""Albumentations steps that draw what ``BatchAugment`` draws, for ``build_augment``.

The batched engine (``emo.data.batch_augment``) trained the bundled models, so where the stock
albumentations transforms did something else with the same preset flags, these subclasses change
the stock behaviour to the batched engine's. ``tests/test_augment_engines.py`` measures both
engines on probe images and fails if they drift apart again. What it measured before these
changes (strong preset, 3000 draws per engine, albumentations 2.0.8):

- ``A.Affine`` drew x and y zoom independently (``keep_ratio=False``): up to 26% anisotropic
  (99th percentile of log(sx/sy)), against 0.5% (interpolation noise) for the batched zoom; and it
  truncated shifts to whole pixels with ``int()``: at most 4 of 48 px (0.083), 0 twice as often as
  any other value, against a continuous shift up to 0.1 of the side (BatchAugment shifts the face
  in its own frame, so the shift turns and zooms with it: up to 0.106).
- ``cv2.BORDER_REFLECT_101`` (mirror about the edge pixel) is not what ``grid_sample``'s
  ``reflection`` does with ``align_corners=False`` (mirror about the edge, the edge pixel
  repeated: ``cv2.BORDER_REFLECT``): a one-pixel frame kept on average 0.52 of its brightness
  against 0.96. ``build_augment`` now uses ``cv2.BORDER_REFLECT`` (a parameter, no subclass).
- ``A.RandomBrightnessContrast`` scales contrast about 0, not about the image mean (its docstring
  says the mean; ``apply`` is ``img * alpha + beta``), so a contrast change also moved the mean
  level: brightness change up to 0.32 (1st-99th percentile -0.33..0.32) against 0.245 for a limit
  of 0.25.
- ``A.Erasing`` draws the box's aspect ratio uniformly, not log-uniformly: mean log(h/w) -0.45
  (mostly wide boxes) against 0.00, and it rounds the sides where the batched engine floors them
  (mean erased fraction 0.110 against 0.101).
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import numpy as np


class FaceFrameAffine(A.Affine):
    """``A.Affine`` whose shift is continuous and made in the face's own frame, as in
    ``BatchAugment``: the face is moved by up to ``shift`` of its side, then rotated and zoomed
    about the centre (so the shift turns and scales with it).

    ``A.Affine``'s ``translate_percent`` is truncated to whole pixels (``int()``) and applied after
    the rotation and zoom; this class leaves it off and adds its own shift to the matrix.
    """

    def __init__(self, *, shift: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.shift = shift

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        out = super().get_params_dependent_on_data(params, data)
        height, width = params["shape"][:2]
        t = np.array(
            [
                self.py_random.uniform(-self.shift, self.shift) * width,
                self.py_random.uniform(-self.shift, self.shift) * height,
            ]
        )
        for key in ("matrix", "bbox_matrix"):  # x' = L (x - c) + c  ->  L (x + t - c) + c
            m = np.array(out[key], dtype=np.float64)
            m[:2, 2] += m[:2, :2] @ t
            out[key] = m
        return out


class MeanBrightnessContrast(A.RandomBrightnessContrast):
    """``A.RandomBrightnessContrast`` with the contrast change about the image's mean, as in
    ``BatchAugment``: ``(x - mean) * alpha + mean + beta``, ``beta`` a fraction of the full scale.
    """

    def __init__(self, limit: float, p: float = 0.5):
        super().__init__(brightness_limit=limit, contrast_limit=limit, brightness_by_max=True, p=p)

    def apply(self, img: np.ndarray, alpha: float, beta: float, **params: Any) -> np.ndarray:
        top = 255.0 if img.dtype == np.uint8 else 1.0
        mean = float(img.mean())
        out = np.clip((img.astype(np.float32) - mean) * alpha + mean + beta, 0, top)
        return np.rint(out).astype(np.uint8) if img.dtype == np.uint8 else out.astype(img.dtype)


class LogRatioErasing(A.Erasing):
    """``A.Erasing`` drawing the box as ``BatchAugment._erase`` (and torchvision's RandomErasing)
    do: area uniform in ``scale`` of the image, aspect ratio h/w log-uniform in ``ratio``, sides
    floored to whole pixels, position uniform over the places where the box fits.
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rnd = self.py_random
        area = rnd.uniform(*self.scale) * height * width
        ratio = math.exp(rnd.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        h = int(min(max(math.sqrt(area * ratio), 1), height))
        w = int(min(max(math.sqrt(area / ratio), 1), width))
        top, left = rnd.randint(0, height - h), rnd.randint(0, width - w)
        holes = np.array([[left, top, left + w, top + h]], dtype=np.int32)
        return {"holes": holes, "seed": self.random_generator.integers(0, 2**32 - 1)}
