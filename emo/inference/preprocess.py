"""How a grey face crop becomes network input, and the test-time views of it: numpy only.

``preprocess_faces`` is the one eval transform: validation, test, ``evaluate`` (through
``emo.data.transforms``, which wraps it in a tensor) and every inference path call it with the
:class:`Preprocess` stored in the model file, so training and serving cannot drift apart.
``tta_views`` builds the test-time views the same way ``EmoModule.predict_proba`` does in
PyTorch (a test holds the two to 1e-5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from emo.errors import EmoError

#: FER-2013's faces: side in pixels, and mean and standard deviation of their grey levels on the
#: 0..1 scale (Training split). What a model file that states no preprocessing of its own used.
IMAGE_SIZE = 48
FER2013_MEAN, FER2013_STD = 0.5077, 0.2550

TTA_MODES = ("none", "flip", "tencrop")
#: Ten-crop TTA: crops of this fraction of the side (44 px of 48), resized back to the input size.
TENCROP_FRACTION = 11 / 12


@dataclass(frozen=True)
class Preprocess:
    """How a grey face crop becomes network input. Every checkpoint stores it (as a dict, under
    ``hyper_parameters.preprocess``) and every exported ONNX model (``emo_preprocess``).

    Attributes:
        image_size: side, in pixels, the crop is resized to.
        mean: mean grey level of the training set on the 0..1 scale (subtracted).
        std: its standard deviation (divided by).
    """

    image_size: int = IMAGE_SIZE
    mean: float = FER2013_MEAN
    std: float = FER2013_STD

    @classmethod
    def of(cls, spec: Preprocess | Mapping[str, Any] | None) -> Preprocess:
        """From a stored dict (``None``: FER-2013's). Checkpoints written before this class also
        carry ``grayscale: true``, which every emo net was: it is accepted and dropped.

        Raises:
            EmoError: a key this class does not know, or colour input.
        """
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        d = dict(spec)
        if d.pop("grayscale", True) is not True:
            raise EmoError("preprocess.grayscale=false: emo's networks take grey faces only")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise EmoError(f"preprocess has unknown keys {unknown}: expected image_size, mean, std")
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in d.items()})

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for checkpoints (``torch.load(weights_only=True)``) and JSON."""
        return asdict(self)


def preprocess_faces(faces: np.ndarray, preprocess: Preprocess | Mapping[str, Any]) -> np.ndarray:
    """Grey face crops (N, H, W) or (H, W), uint8, any size -> normalised (N, 1, S, S) float32."""
    faces = np.asarray(faces)
    if faces.ndim == 2:
        faces = faces[None]
    pre = Preprocess.of(preprocess)
    size = pre.image_size
    if faces.shape[1:] != (size, size):
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces])
    x = faces.astype(np.float32)[:, None] / np.float32(255.0)
    return (x - np.float32(pre.mean)) / np.float32(pre.std)  # (N, 1, S, S)


def check_tta(tta: str) -> None:
    """Raise a one-line :class:`EmoError` unless ``tta`` is one of ``TTA_MODES``."""
    if tta not in TTA_MODES:
        raise EmoError(f"tta={tta!r} is not valid: choose one of {', '.join(TTA_MODES)}")


def n_views(tta: str) -> int:
    """How many network inputs ``tta`` makes of one face."""
    check_tta(tta)
    return {"none": 1, "flip": 2, "tencrop": 10}[tta]


@lru_cache(maxsize=8)
def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of a 1-D linear resize with half-pixel centres and edge clamping, as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` computes it (in
    float32, as it does: its views and these agree within 1e-5)."""
    f = np.float32
    pos = np.maximum(f(src) / f(dst) * (np.arange(dst, dtype=f) + f(0.5)) - f(0.5), f(0))
    lo = np.minimum(np.floor(pos).astype(int), src - 1)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(f)
    m = np.zeros((dst, src), dtype=f)
    np.add.at(m, (np.arange(dst), lo), f(1) - frac)
    np.add.at(m, (np.arange(dst), hi), frac)
    return m


def tta_views(x: np.ndarray, tta: str) -> np.ndarray:
    """The test-time views of a batch (B, 1, S, S) as (V, B, 1, S, S).

    ``flip`` adds the mirrored face; ``tencrop`` the four corner and the centre crops of
    ``TENCROP_FRACTION`` of the side, resized back (bilinear), then the same five of the mirrored
    face (torchvision's ``ten_crop`` order).
    """
    check_tta(tta)
    if tta == "none":
        return x[None]
    flipped = x[..., ::-1]
    if tta == "flip":
        return np.stack([x, flipped])
    size = x.shape[-1]
    crop = round(size * TENCROP_FRACTION)
    centre = int(round((size - crop) / 2.0))
    far = size - crop
    corners = [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]  # (top, left)
    m = _resize_matrix(crop, size)  # (S, crop)
    views = [
        m @ img[..., top : top + crop, left : left + crop] @ m.T
        for img in (x, flipped)
        for top, left in corners
    ]
    return np.stack(views).astype(np.float32, copy=False)
