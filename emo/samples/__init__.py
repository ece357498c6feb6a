"""Redistributable sample images (see LICENSE.md) and a short sample video built from them.

``make demo``, the tests and ``benchmarks/realtime.py`` run on these, so none of them needs a
camera, a download or FER-2013.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from emo.errors import EmoError

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_images() -> list[Path]:
    """The bundled sample images, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.png"))


def sample_path(name: str) -> Path:
    """A bundled sample image by stem (``astronaut``) or file name."""
    path = SAMPLES_DIR / (name if name.endswith(".png") else f"{name}.png")
    if not path.is_file():
        names = ", ".join(p.stem for p in sample_images())
        raise EmoError(f"no sample image named {name!r}: choose one of {names}")
    return path


def moving_face_frames(
    n_frames: int = 60, size: tuple[int, int] = (640, 480), face: str = "astronaut", side: int = 400
) -> list[np.ndarray]:
    """BGR frames (H, W, 3) of a sample image gliding across a plain background.

    The image is scaled to ``side`` pixels (400: the astronaut's face is then about 150 px wide,
    a webcam user at arm's length), moves on a slow ellipse and its size breathes by +-10%, so
    a tracker has to follow it.
    """
    width, height = size
    img = cv2.imread(str(sample_path(face)), cv2.IMREAD_COLOR)
    frames = []
    for i in range(n_frames):
        t = 2 * np.pi * i / max(n_frames, 1)
        s = min(int(side * (1 + 0.1 * np.sin(2 * t))), width, height)
        tile = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)
        cx = width / 2 + 0.4 * (width - s) * np.cos(t)
        cy = height / 2 + 0.4 * (height - s) * np.sin(t)
        x, y = int(cx - s / 2), int(cy - s / 2)
        frame = np.full((height, width, 3), 96, np.uint8)
        frame[y : y + s, x : x + s] = tile
        frames.append(frame)
    return frames


def write_y4m(path: str | Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """BGR frames as a YUV4MPEG2 (4:2:0) video, the format chromium's fake camera plays
    (``--use-file-for-fake-video-capture``): a header line, then per frame ``FRAME`` and the Y, U
    and V planes."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return Path(path)


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    """Write BGR frames as an MP4 (``mp4v``, which every OpenCV wheel can encode)."""
    from emo.inference.video import open_writer  # the one place that opens an emo video writer

    writer = open_writer(path, fps, frames[0].shape)
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return Path(path)


def sample_video(path: str | Path, n_frames: int = 60, fps: float = 30.0) -> Path:
    """Write the sample video (640x480, the astronaut's face moving) to ``path``."""
    return write_video(path, moving_face_frames(n_frames), fps)
