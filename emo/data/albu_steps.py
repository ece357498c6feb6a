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

The camera steps (issue 15) use the stock ``A.GaussianBlur`` (sigma uniform, kernel
2 * int(3.5 sigma) + 1 taps, mirrored border: what ``BatchAugment._blur`` does) and
``A.ImageCompression`` (OpenCV's codec, which ``BatchAugment._jpeg`` calls: the same bytes).
``A.GaussNoise``, ``A.Perspective`` and ``A.Illumination`` draw something else; see
``RoundedGaussNoise``, ``CornerPerspective`` and ``CentredIllumination``.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2
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


class CornerPerspective(A.Perspective):
    """A perspective warp that moves each corner of the face by up to ``scale`` of the side in x
    and y (uniform), and maps the moved corners onto the frame, as ``BatchAugment._perspective``.

    ``A.Perspective`` moves the corners only inwards (half-normal, folded at 0.32), so every warp
    also zooms in, and with ``keep_size`` it scales its matrix once more by side / (width of the
    quadrilateral): a second zoom on top. This class keeps its warp and border handling and draws
    the corners itself.
    """

    def __init__(self, scale: float, **kwargs: Any):
        super().__init__(scale=(scale, scale), keep_size=True, fit_output=False, **kwargs)
        self.corner_scale = scale

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        # The frame's corners (pixel edges; pixel centres are at integers), and where each comes from.
        frame = np.array(
            [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]]
        )
        s = self.corner_scale
        move = np.array([[self.py_random.uniform(-s, s) for _ in range(2)] for _ in range(4)])
        source = frame + move * [width, height]
        matrix = cv2.getPerspectiveTransform(source.astype(np.float32), frame.astype(np.float32))
        return {"matrix": matrix, "max_height": height, "max_width": width, "matrix_bbox": matrix}


class CentredIllumination(A.ImageOnlyTransform):
    """Uneven light as ``BatchAugment._lighting`` draws it: the face times ``1 + a * d``, ``d`` the
    distance from the centre along a direction uniform in 0..360 degrees, in half sides, and ``a``
    uniform in ``intensity``.

    ``A.Illumination``'s linear gradient runs from 0 at the top-left corner, unnormalised, so its
    mean and its range change with the angle (a field from 1 - a to 1 + a at 0 degrees, but from
    1 - a to 1 + 1.7 a at 30 degrees), and it caps ``a`` at 0.2 (a 1.5:1 light ratio).
    """

    def __init__(self, intensity: tuple[float, float], p: float = 0.5):
        super().__init__(p=p)
        self.intensity = tuple(intensity)

    def get_params(self) -> dict[str, float]:
        return {"intensity": self.py_random.uniform(*self.intensity), "angle": self.py_random.uniform(0, 360)}

    def apply(self, img: np.ndarray, intensity: float, angle: float, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        theta = math.radians(angle)
        x = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / (width / 2)
        y = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / (height / 2)
        field = 1 + intensity * (x[None, :] * math.cos(theta) + y[:, None] * math.sin(theta))
        if img.ndim == 3:
            field = field[..., None]
        top = 255.0 if img.dtype == np.uint8 else 1.0
        out = np.clip(img.astype(np.float32) * field, 0, top)
        return np.rint(out).astype(np.uint8) if img.dtype == np.uint8 else out.astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("intensity",)


class RoundedGaussNoise(A.GaussNoise):
    """``A.GaussNoise`` that adds its noise to a uint8 face in floating point and rounds, as the
    batched engine (which keeps floats) does in effect.

    ``A.GaussNoise`` adds the noise to uint8 faces in whole grey levels, rounded towards zero:
    every draw between -1 and +1 level is lost, so a std of 0.01 (2.55 levels) came out as 0.0086,
    and flat regions kept 2.3 times more unchanged pixels than their neighbouring levels.
    """

    def apply(self, img: np.ndarray, noise_map: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8:
            return super().apply(img, noise_map=noise_map, **params)
        noise = noise_map.reshape(img.shape) if noise_map.size == img.size else noise_map
        return np.rint(np.clip(img.astype(np.float32) + noise, 0, 255)).astype(np.uint8)
