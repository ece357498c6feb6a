"""Images in: a path, a PIL image or a numpy array (grey, BGR or BGRA; uint8 or float) as BGR or
grey uint8, with a one-line error for anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emo.errors import EmoError

#: The runtime's pixel limit (the server's default too, ``emo serve --max-pixels``): 48 MP phone
#: photos pass; decoded as BGR that is ~150 MB.
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def read_image(path: str | Path) -> np.ndarray:
    """An image file as BGR uint8 (H, W, 3).

    Raises:
        EmoError: the file is missing, or not an image OpenCV can decode.
    """
    path = Path(path)
    if not path.is_file():
        raise EmoError(f"image {path} not found: check the path")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:  # permission denied, a file that vanished, a name too long
        raise EmoError(f"cannot read {path}: {err.strerror or err}") from None
    if not data.size:
        raise EmoError(f"cannot read {path}: the file is empty")
    # imdecode, not imread: imread cannot open non-ASCII paths on Windows.
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise EmoError(f"cannot read {path}: not an image, or a corrupt one (use PNG, JPEG, BMP or WebP)")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 as is; floats on the 0..1 scale (max <= 1) or 0..255; other integers if within 0..255."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image)
        scale = 255.0 if image.size and image.max() <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer) and image.size and 0 <= image.min() and image.max() <= 255:
        return image.astype(np.uint8)
    raise EmoError(f"image of dtype {image.dtype} is not supported: give uint8, or floats in 0..1 or 0..255")


def to_bgr(image: Any) -> np.ndarray:
    """A path, a PIL image or a numpy array (grey, BGR or BGRA; uint8 or float) as BGR uint8."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if type(image).__module__.startswith("PIL."):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])  # PIL is RGB
    if not isinstance(image, np.ndarray):
        raise EmoError(
            f"cannot read an image from {type(image).__name__}: give a path, numpy array or PIL image"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or not image.size:
        raise EmoError(f"image of shape {image.shape}: give (H, W) grey or (H, W, 3) BGR")
    image = to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image


def to_grey(image: Any) -> np.ndarray:
    """Any input ``to_bgr`` accepts, as grey uint8 (H, W)."""
    if isinstance(image, np.ndarray) and (image.ndim == 2 or image.shape[-1] == 1):
        if image.size == 0:
            raise EmoError(f"image of shape {image.shape} is empty")
        return np.ascontiguousarray(to_uint8(image.reshape(image.shape[:2])))
    return cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)
