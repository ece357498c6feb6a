"""Video in and out, and what links a face across frames: open a camera, file or stream; write an
MP4; follow faces between full detections (``FaceTracker``); give each face an id and smooth its
probabilities (``Smoother``); log per-frame predictions (``CsvLog``).

Outputs are written to a temporary file beside the destination and moved into place when they
are complete (``os.replace``), so a reader never sees half a file, and what was written is
checked (an MP4's frame count, a CSV's existence) before the destination is replaced.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from emo.errors import EmoError
from emo.inference.detect import HaarDetector, YuNetDetector, usable_boxes
from emo.inference.images import (
    MAX_PIXELS,
    check_output,
    check_pixels,
    is_file,
    os_reason,
    shown,
    temp_beside,
)
from emo.inference.recognizer import Face


def open_source(source: str | int) -> tuple[cv2.VideoCapture, bool]:
    """Open a webcam index, video file or stream URL; returns (capture, is_live).

    Raises:
        EmoError: no such camera or file, or OpenCV cannot decode it.
    """
    text = str(source)
    if text.isdigit():
        cap = cv2.VideoCapture(int(text))
        if not cap.isOpened():
            raise EmoError(
                f"cannot open camera {text}: none is connected, or another program uses it; "
                "pass --source VIDEO_FILE or URL to run on a recording"
            )
        return cap, True
    is_url = "://" in text
    if not is_url and not is_file(Path(text)):
        raise EmoError(f"video {shown(text)} not found: give a video file, a stream URL or a camera index")
    cap = cv2.VideoCapture(text)
    if not cap.isOpened():
        raise EmoError(
            f"cannot open {shown(text)}: not a video, or in a format this OpenCV build cannot decode"
        )
    return cap, is_url


def frame_count(cap: cv2.VideoCapture) -> int | None:
    """The frames a file's container announces (``CAP_PROP_FRAME_COUNT``); ``None``: unknown."""
    total = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(total) if np.isfinite(total) and 0 < total < 1e9 else None


def check_frame_size(cap: cv2.VideoCapture, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, before the first frame is decoded, a video whose frames are over ``max_pixels``."""
    width, height = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0:
        check_pixels(int(width), int(height), max_pixels, f"video {name}'s frame")


def stopped_early(name: str, read: int, total: int | None) -> str | None:
    """The warning for a file whose frames stop before the count its container gives."""
    if total is None or read >= total:
        return None
    return (
        f"{name}: decoding stopped at frame {read} of {total} (a corrupt file?); "
        "results cover the frames read"
    )


class VideoWriter:
    """An MP4 (mp4v, which every OpenCV wheel can encode) written to a temporary file beside
    ``path``; ``release`` checks its frame count and moves it into place. Frames of another
    size than the first are resized (OpenCV's writer would drop them without a word)."""

    def __init__(self, path: str | Path, fps: float, shape: tuple[int, ...]):
        self.path = Path(path)
        self.tmp = temp_beside(self.path, f"video {shown(self.path)}")
        self.size = (int(shape[1]), int(shape[0]))
        self.frames, self.done = 0, False
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self.writer.isOpened():
            self.abort()
            raise EmoError(f"cannot write video {shown(self.path)}: use a writable folder and an .mp4 name")

    def isOpened(self) -> bool:  # noqa: N802  (cv2.VideoWriter's name)
        return not self.done and self.writer.isOpened()

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.frames += 1

    def abort(self) -> None:
        """Stop and remove the temporary file; ``path`` is left as it was."""
        self.done = True
        if hasattr(self, "writer"):
            self.writer.release()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def release(self) -> None:
        """Finish the file, check it holds every frame written, and move it to ``path``.

        Raises:
            EmoError: the file is missing, unreadable or short of frames (``path`` untouched).
        """
        if self.done:
            return
        self.done = True
        self.writer.release()
        try:
            cap = cv2.VideoCapture(str(self.tmp))
            opened = cap.isOpened()
            raw = cap.get(cv2.CAP_PROP_FRAME_COUNT) if opened else -1.0
            found = int(raw) if np.isfinite(raw) and 0 <= raw < 1e9 else None
            cap.release()
            # MP4 and AVI give the exact count; containers that estimate it from the duration
            # may be a frame off, and some give none (then opening the file is the check).
            if not opened or (found is not None and abs(found - self.frames) > max(1, self.frames // 100)):
                raise EmoError(
                    f"could not write video {shown(self.path)}: the file holds {found or 0} of "
                    f"{self.frames} frames (a full disk?)"
                )
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise EmoError(f"could not write video {shown(self.path)}: {os_reason(err)}") from None
        finally:
            with contextlib.suppress(OSError):
                self.tmp.unlink()


def open_writer(path: str | Path, fps: float, shape: tuple[int, ...]) -> VideoWriter:
    """A video writer for BGR frames of ``shape``: written beside ``path``, checked and moved
    into place by ``release`` (:class:`VideoWriter`)."""
    return VideoWriter(path, fps, shape)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Face boxes for consecutive frames at a fraction of full detection's cost.

    Every ``detect_every`` frames (and while no face is known) the whole frame is searched; in
    between, each known face is searched for only in a window of twice its side around its last
    box, shrunk so the face is ~``detector.track_face`` px; a face not found there keeps its last box until the next
    full search.

    Args:
        detector: the full-frame detector (its ``framing`` is kept).
        detect_every: full-search period in frames (1: every frame).
    """

    def __init__(self, detector: HaarDetector | YuNetDetector, detect_every: int = 5):
        if detect_every < 1:
            raise EmoError(f"detect_every={detect_every}: use 1 (every frame) or more")
        self.detector, self.detect_every = detector, detect_every
        self.boxes = np.zeros((0, 4), dtype=np.int64)
        self.frame = 0
        self.full_searches = 0

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        """Square boxes (K, 4) of the faces in this grey frame (H, W)."""
        if self.frame % self.detect_every == 0 or not len(self.boxes):
            self.boxes = self.detector(grey)
            self.full_searches += 1
        else:
            self.boxes = np.stack([self._follow(grey, box) for box in self.boxes])
        self.boxes = usable_boxes(self.boxes, grey.shape)  # each with a pixel in this frame
        self.frame += 1
        return self.boxes

    def _follow(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        x, y, side, _ = (int(v) for v in box)
        cx, cy = x + side / 2, y + side / 2
        x0, y0 = max(0, int(cx - side)), max(0, int(cy - side))
        x1, y1 = min(grey.shape[1], int(cx + side)), min(grey.shape[0], int(cy + side))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return box
        face = side * self.detector.raw_per_crop
        window = grey[y0:y1, x0:x1]
        found = self.detector.raw(  # shrunk so the face is ~track_face px: a cheap search
            window,
            max_side=int(self.detector.track_face * max(window.shape) / face),
            min_face=int(0.7 * face),
            max_face=int(1.4 * face),
            offset=(x0, y0),
        )
        if not len(found):
            return box
        centres = found[:, :2] + found[:, 2:4] / 2
        nearest = found[np.argmin(((centres - (cx, cy)) ** 2).sum(1))]
        return self.detector.frame(nearest)[0]


class Smoother:
    """Face ids across frames, and an exponential moving average of each face's probabilities.

    A face is the same as one of the previous frame when their boxes overlap (IoU >= ``min_iou``):
    it keeps that face's ``face_id`` (0, 1, 2, ... in order of first appearance) and its
    probabilities become ``alpha * previous + (1 - alpha) * current``. ``alpha = 0`` turns
    smoothing off (ids are still given); 0.8 at 30 FPS halves an old frame's weight every ~3
    frames (0.1 s).
    """

    def __init__(self, alpha: float = 0.8, min_iou: float = 0.3):
        if not 0.0 <= alpha < 1.0:
            raise EmoError(f"smooth={alpha}: use a value in [0, 1) (0: off, 0.8: default)")
        self.alpha, self.min_iou = alpha, min_iou
        self.tracks: list[tuple[tuple[int, int, int, int], np.ndarray, int]] = []
        self.next_id = 0

    def __call__(self, faces: Sequence[Face]) -> list[Face]:
        out, tracks, free = [], [], list(range(len(self.tracks)))
        for face in faces:
            names = list(face.scores)
            probs = face.probs
            overlaps = [iou(face.box, self.tracks[i][0]) for i in free]
            if overlaps and max(overlaps) >= self.min_iou:
                _, previous, face_id = self.tracks[free.pop(int(np.argmax(overlaps)))]
                probs = self.alpha * previous + (1 - self.alpha) * probs
            else:
                face_id, self.next_id = self.next_id, self.next_id + 1
            tracks.append((face.box, probs, face_id))
            scores = {c: float(p) for c, p in zip(names, probs)}
            out.append(Face(face.box, names[int(probs.argmax())], scores, face_id))
        self.tracks = tracks
        return out


class CsvLog:
    """Per-frame predictions, one row per face: ``frame, time_s, face_id, x, y, w, h, label`` and
    one probability column per class. A frame without a face is one row with the same columns,
    empty after ``time_s``.

    The rows go to a temporary file beside ``path``, which ``close`` moves into place.

    Raises:
        EmoError: ``path`` is a folder, or its folder cannot be created or written (checked
            here, before any frame), or a write fails (a full disk).
    """

    def __init__(self, path: str | Path, class_names: Sequence[str], inputs: Sequence[str | Path] = ()):
        self.path = check_output(path, "--csv", inputs)
        self.class_names = list(class_names)
        self.tmp = temp_beside(self.path, f"--csv {shown(self.path)}")
        try:
            self.file = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115  (closed by close())
        except OSError as err:
            raise EmoError(f"--csv {shown(self.path)}: cannot write there ({os_reason(err)})") from None
        self.writer = csv.writer(self.file)
        self.done = False
        self._rows([csv_columns(self.class_names)])

    def _rows(self, rows: list[list]) -> None:
        try:
            self.writer.writerows(rows)
        except OSError as err:
            self.abort()
            raise EmoError(f"--csv {shown(self.path)}: could not write ({os_reason(err)})") from None

    def write(self, frame: int, time_s: float, faces: Sequence[Face]) -> None:
        self._rows(csv_rows(frame, time_s, faces, self.class_names))

    def abort(self) -> None:
        """Stop and remove the temporary file; ``path`` is left as it was."""
        self.done = True
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def close(self) -> None:
        """Flush the rows and move the file into place.

        Raises:
            EmoError: the rows could not be written out (``path`` untouched).
        """
        if self.done:
            return
        self.done = True
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise EmoError(f"--csv {shown(self.path)}: could not write ({os_reason(err)})") from None
        finally:
            with contextlib.suppress(OSError):
                self.tmp.unlink()


def csv_columns(class_names: Sequence[str]) -> list[str]:
    return ["frame", "time_s", "face_id", "x", "y", "w", "h", "label", *class_names]


def csv_rows(frame: int, time_s: float, faces: Sequence[Face], class_names: Sequence[str]) -> list[list]:
    """The CSV rows of one frame (``CsvLog``): one per face, or one empty row."""
    if not faces:
        return [[frame, f"{time_s:.3f}", *[""] * (6 + len(class_names))]]
    return [
        [
            frame,
            f"{time_s:.3f}",
            "" if face.face_id is None else face.face_id,
            *face.box,
            face.label,
            *(f"{face.scores[c]:.4f}" for c in class_names),
        ]
        for face in faces
    ]
