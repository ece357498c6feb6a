"""Drawing predictions on BGR images: a box and label per face, probability bars, an FPS counter."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import cv2
import numpy as np

#: BGR colours of FER-2013's classes; other class names get a colour derived from the name.
COLOURS = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (30, 200, 250),
    "sad": (200, 120, 40),
    "surprise": (220, 200, 30),
    "neutral": (190, 190, 190),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Box coordinates are clamped to this many pixels past the image (OpenCV takes C ints only).
FAR = 1 << 20


def _coord(v, far: int) -> int:
    """A box coordinate as an int OpenCV can draw with: NaN as 0, the rest clamped to +-``far``."""
    v = float(v)
    return 0 if v != v else int(min(max(v, -far), far))


def colour(name: str) -> tuple[int, int, int]:
    if name in COLOURS:
        return COLOURS[name]
    h = zlib.crc32(name.encode())
    return (64 + h % 192, 64 + (h >> 8) % 192, 64 + (h >> 16) % 192)


def annotate(image: np.ndarray, faces: Sequence, fps: float | None = None, bars: bool = True) -> np.ndarray:
    """A copy of a BGR image (H, W, 3) with each face's box, label and probability bars.

    Args:
        faces: :class:`~emo.inference.recognizer.Face` (``box``, ``label``, ``scores``: a class ->
            probability map, and ``face_id``, drawn as ``#id`` before the label when set).
        fps: drawn in the top-left corner when given.
        bars: draw one probability bar per class beside each face.
    """
    out = image.copy()
    height, width = out.shape[:2]
    scale = max(0.4, min(width, height) / 900)  # text that stays legible on small and large frames
    thick = max(1, round(scale * 2))
    for face in faces:
        box, label, scores = face[:3]
        face_id = face[3] if len(face) > 3 else None
        x, y, w, h = (_coord(v, FAR + max(width, height)) for v in box)
        c = colour(label)
        cv2.rectangle(out, (x, y), (x + w, y + h), c, thick)
        p = float(scores.get(label, 0.0))
        text = f"{label} {p:.0%}" if face_id is None else f"#{face_id} {label} {p:.0%}"
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base // 2), c, -1)
        cv2.putText(out, text, (x + 2, ty - base // 2), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
        if bars:
            _bars(out, scores, x, y, w, scale)
    if fps is not None:
        cv2.putText(
            out,
            f"{fps:.0f} FPS",
            (8, int(28 * scale / 0.6)),
            FONT,
            scale * 1.2,
            (0, 255, 0),
            thick,
            cv2.LINE_AA,
        )
    return out


def _bars(out: np.ndarray, scores: dict[str, float], x: int, y: int, w: int, scale: float) -> None:
    """One horizontal bar per class, right of the box (left of it when there is no room)."""
    row = int(16 * scale / 0.4)
    bar_w, name_w = int(60 * scale / 0.4), int(56 * scale / 0.4)
    total = name_w + bar_w + 4
    bx = x + w + 6 if x + w + 6 + total <= out.shape[1] else max(0, x - total - 6)
    by = max(0, y)
    bottom = min(out.shape[0], by + row * len(scores))
    panel = out[by:bottom, bx : bx + total]
    panel[:] = panel // 3  # darken behind the bars: legible on bright backgrounds
    for i, (name, p) in enumerate(scores.items()):
        top = by + i * row
        if top + row > out.shape[0]:
            break
        cv2.putText(out, name[:8], (bx, top + row - 4), FONT, scale * 0.8, (255, 255, 255), 1, cv2.LINE_AA)
        x0 = bx + name_w
        cv2.rectangle(out, (x0, top + 3), (x0 + bar_w, top + row - 3), (60, 60, 60), -1)
        cv2.rectangle(
            out, (x0, top + 3), (x0 + int(bar_w * float(np.clip(p, 0, 1))), top + row - 3), colour(name), -1
        )
