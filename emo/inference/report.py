"""A video's emotions over time: the per-frame CSV, a timeline plot and a summary per face.

    emo-predict clip.mp4 --report out/        # out/clip.csv, clip_timeline.png, clip_summary.json

The summary gives, for each face id (the same person across frames), how long it was seen and
the share of its frames in which each emotion was the dominant one. The timeline is drawn with
OpenCV alone (:func:`timeline_image`): one panel per face, each class's probability over time.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from emo.errors import EmoError
from emo.inference.draw import FONT, colour
from emo.inference.images import check_output, is_dir, make_folder, shown, write_bytes, write_image
from emo.inference.video import csv_columns, csv_rows

if TYPE_CHECKING:
    from emo.inference.recognizer import Face

#: Faces drawn in the timeline, longest seen first (a crowd would make it unreadable).
MAX_TIMELINE_FACES = 8
#: A face missing for more than this many frame intervals leaves a gap in its lines.
GAP_FRAMES = 3

# Timeline layout, in pixels: a title band, one panel per face (its title, the axes, the time
# ticks' labels), the time axis label under the last panel, then the legend.
WIDTH = 1100
TITLE_H = 46
PANEL_TITLE_H = 28
AXES_H = 150
TICKS_H = 26
PANEL_H = PANEL_TITLE_H + AXES_H + TICKS_H
XLABEL_H = 26
LEGEND_ROW_H = 28
LEFT, RIGHT, BOTTOM = 82, 28, 12
#: Fractional bits of the lines' fixed-point pixel coordinates (cv2's ``shift``): smooth curves.
SHIFT = 3
PAD = 6  # inside the axes, so that lines at 0, 1 and the ends of the time range clear the frame

INK, GREY, GRID = (30, 30, 30), (90, 90, 90), (226, 226, 226)
TITLE_SCALE, LABEL_SCALE, TICK_SCALE = 0.7, 0.5, 0.42


class VideoReport:
    """Collects a video's faces frame by frame, then writes the CSV, the plot and the summary."""

    def __init__(self, video: str | Path, class_names: Sequence[str], fps: float):
        self.video, self.class_names, self.fps = Path(video), list(class_names), fps
        self.frames: list[tuple[int, float, list[Face]]] = []

    def add(self, frame: int, faces: Sequence[Face]) -> None:
        self.frames.append((frame, frame / self.fps, list(faces)))

    def summary(self) -> dict[str, Any]:
        """Per face id: frames and seconds seen, and the share of those frames each emotion led."""
        per_face: dict[int, list[str]] = {}
        for _, _, faces in self.frames:
            for face in faces:
                per_face.setdefault(face.face_id, []).append(face.label)
        faces = {}
        for face_id, labels in sorted(per_face.items(), key=lambda kv: -len(kv[1])):
            share = {c: labels.count(c) / len(labels) for c in self.class_names}
            faces[str(face_id)] = {
                "frames": len(labels),
                "seconds": round(len(labels) / self.fps, 3),
                "dominant": max(share, key=share.get),
                "share": {c: round(v, 4) for c, v in share.items()},
            }
        return {
            "video": str(self.video),
            "frames": len(self.frames),
            "seconds": round(len(self.frames) / self.fps, 3),
            "fps": self.fps,
            "frames_without_a_face": sum(not faces for _, _, faces in self.frames),
            "faces": faces,
        }

    def timeline(self, summary: dict[str, Any]) -> np.ndarray:
        """Each class's probability over time, one panel per face id (the longest seen first), as a
        BGR image (see :func:`timeline_image`)."""
        ids = [int(i) for i in summary["faces"]][:MAX_TIMELINE_FACES]
        per_face: dict[int, tuple[list[float], list[list[float]]]] = {i: ([], []) for i in ids}
        for _, time, faces in self.frames:
            for face in faces:
                if face.face_id in per_face:
                    times, probs = per_face[face.face_id]
                    times.append(time)
                    probs.append([face.scores.get(c, 0.0) for c in self.class_names])
        tracks = {
            i: (np.array(t), np.array(p, dtype=np.float32).reshape(len(t), len(self.class_names)))
            for i, (t, p) in per_face.items()
        }
        title = self.video.name
        if len(summary["faces"]) > len(ids):
            title += f"  ({len(ids)} of {len(summary['faces'])} faces)"
        span = (self.frames[0][1], self.frames[-1][1]) if self.frames else None
        return timeline_image(tracks, self.class_names, title, self.fps, span)

    def paths(self, out_dir: str | Path) -> dict[str, Path]:
        """Where ``write`` puts the CSV, the timeline and the summary."""
        out_dir, stem = Path(out_dir), self.video.stem
        return {
            "csv": out_dir / f"{stem}.csv",
            "timeline": out_dir / f"{stem}_timeline.png",
            "summary": out_dir / f"{stem}_summary.json",
        }

    def write(self, out_dir: str | Path, stderr: bool = False) -> dict[str, Path]:
        """Write ``<stem>.csv``, ``<stem>_timeline.png`` and ``<stem>_summary.json`` to ``out_dir``
        and print the summary (on stderr when stdout carries JSON or CSV). Each file is written
        to a temporary file beside it and moved into place whole.

        Raises:
            EmoError: ``out_dir`` is not a folder that can be written, or one of the three names
                is taken by a folder.
        """
        out_dir = Path(out_dir)
        check_output(out_dir, "--report", folder=True)
        paths = self.paths(out_dir)
        for path in paths.values():
            check_output(path, "--report")
        summary = self.summary()
        make_folder(out_dir, "--report")
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(csv_columns(self.class_names))
        for frame, time, faces in self.frames:
            writer.writerows(csv_rows(frame, time, faces, self.class_names))
        write_bytes(paths["csv"], text.getvalue().encode(), "--report")
        write_bytes(paths["summary"], (json.dumps(summary, indent=1) + "\n").encode(), "--report")
        write_png(paths["timeline"], self.timeline(summary))
        print_summary(summary, self.class_names, stderr)
        return paths


def print_summary(summary: dict[str, Any], class_names: Sequence[str], stderr: bool = False) -> None:
    """The summary as a table: one row per face, the share of time each emotion was dominant."""
    table = Table(title=f"{summary['video']}: {summary['seconds']:.1f} s, {summary['frames']} frames")
    table.add_column("face")
    table.add_column("seen (s)", justify="right")
    for name in class_names:
        table.add_column(name, justify="right")
    for face_id, face in summary["faces"].items():
        shares = [f"{face['share'][c]:.0%}" for c in class_names]
        lead = class_names.index(face["dominant"])
        shares[lead] = f"[bold]{shares[lead]}[/bold]"
        table.add_row(f"#{face_id}", f"{face['seconds']:.1f}", *shares)
    Console(width=max(100, Console().width), stderr=stderr).print(table)


def axes_box(index: int, width: int = WIDTH) -> tuple[int, int, int, int]:
    """The frame (x0, y0, x1, y1) of the timeline's ``index``-th panel, both ends inclusive."""
    y0 = TITLE_H + index * PANEL_H + PANEL_TITLE_H
    return LEFT, y0, width - RIGHT, y0 + AXES_H


def nice_ticks(lo: float, hi: float, target: int = 10) -> np.ndarray:
    """Round tick values in [lo, hi]: a step of 1, 2 or 5 x 10^k that gives about ``target`` ticks."""
    span = hi - lo
    if not span > 0:
        return np.array([lo])
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = (first + np.arange(int(math.floor(hi / step + 1e-9)) - first + 1)) * step
    return np.round(ticks, 12)


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as ticks ``step`` apart need (0.5 -> 1, 20 -> 0)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 2
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def timeline_image(
    tracks: Mapping[int, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    title: str,
    fps: float,
    span: tuple[float, float] | None = None,
    width: int = WIDTH,
) -> np.ndarray:
    """Each class's probability over time, one panel per face, as a BGR uint8 image.

    Args:
        tracks: face id -> (times (N,) in seconds, ascending, probabilities (N, C) in
            ``class_names`` order), drawn top to bottom in the mapping's order.
        title: drawn above the panels (the video's name).
        fps: frames per second: a face missing for more than ``GAP_FRAMES`` frame intervals
            leaves a gap in its lines.
        span: the time axis' range in seconds (the whole video); by default the tracks' own.
    """
    ids = list(tracks)
    n_panels = max(len(ids), 1)
    legend_rows = _legend_rows(class_names, width) if ids else []
    height = TITLE_H + n_panels * PANEL_H + XLABEL_H + len(legend_rows) * LEGEND_ROW_H + BOTTOM
    img = np.full((height, width, 3), 255, np.uint8)

    if span is None:
        times = [t for t, _ in tracks.values() if len(t)]
        span = (min(t[0] for t in times), max(t[-1] for t in times)) if times else (0.0, 1.0)
    lo, hi = float(span[0]), float(span[1])
    if not hi > lo:  # one frame: a second's axis with the point at its start
        hi = lo + 1.0
    xticks = nice_ticks(lo, hi)
    step = float(xticks[1] - xticks[0]) if len(xticks) > 1 else hi - lo

    title = _fit(_ascii(title), width - 40, TITLE_SCALE, 2)
    _text(img, title, (width // 2, TITLE_H // 2 + 2), TITLE_SCALE, INK, 2, "cc")
    for i in range(n_panels):
        x0, y0, x1, y1 = axes_box(i, width)
        _axes(img, (x0, y0, x1, y1), lo, hi, xticks, step)
        if not ids:
            _text(img, "no face found", ((x0 + x1) // 2, (y0 + y1) // 2), 0.6, GREY, 1, "cc")
            continue
        face_id = ids[i]
        _text(img, f"face #{face_id}", ((x0 + x1) // 2, y0 - 9), 0.55, INK, 1, "cb")
        t, probs = (np.asarray(a, dtype=np.float64) for a in tracks[face_id])
        _lines(img, (x0, y0, x1, y1), lo, hi, t, probs.reshape(len(t), -1), class_names, fps)
    x0, _, x1, y1 = axes_box(n_panels - 1, width)
    _text(img, "time (s)", ((x0 + x1) // 2, y1 + TICKS_H + XLABEL_H - 8), LABEL_SCALE, INK, 1, "cb")
    _legend(img, legend_rows, TITLE_H + n_panels * PANEL_H + XLABEL_H)
    return img


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG into an existing folder, atomically (a temporary file beside it,
    then ``os.replace``), or raise :class:`EmoError` naming the path and the fix."""
    path = Path(path)
    if not is_dir(path.parent) or path.suffix.lower() != ".png" or is_dir(path):
        raise EmoError(
            f"cannot write {shown(path)}: make sure its folder exists and is writable, and the name ends in .png"
        )
    return write_image(path, image, "timeline")


def _axes(img, box, lo, hi, xticks, step) -> None:
    """Frame, grid, ticks and tick labels of one panel, and its rotated 'probability' label."""
    x0, y0, x1, y1 = box
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = _ys(np.array([p]), y0, y1)[0]
        cv2.line(img, (x0 + 1, y), (x1 - 1, y), GRID, 1)
        cv2.line(img, (x0 - 4, y), (x0, y), INK, 1)
        _text(img, f"{p:g}", (x0 - 8, y), TICK_SCALE, GREY, 1, "rc")
    for v, x in zip(xticks, _xs(xticks, lo, hi, x0, x1)):
        cv2.line(img, (x, y0 + 1), (x, y1 - 1), GRID, 1)
        cv2.line(img, (x, y1), (x, y1 + 4), INK, 1)
        _text(img, tick_label(float(v), step), (x, y1 + 8), TICK_SCALE, GREY, 1, "ct")
    cv2.rectangle(img, (x0, y0), (x1, y1), INK, 1)
    _vertical_text(img, "probability", (x0 - 46, (y0 + y1) // 2), LABEL_SCALE, INK)


def _lines(img, box, lo, hi, t, probs, class_names, fps) -> None:
    """Each class's probability as a line in its colour, broken where the face was missing."""
    x0, y0, x1, y1 = box
    if not len(t):
        return
    xs = _xs(t, lo, hi, x0, x1, SHIFT)
    breaks = np.flatnonzero(np.diff(t) > GAP_FRAMES / fps * (1 + 1e-6)) + 1
    bounds = np.concatenate([[0], breaks, [len(t)]])
    runs = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    # a dot per point where points are far enough apart for it to show, else only on lone points
    dots = len(t) == 1 or np.median(np.diff(xs)) >= 4 << SHIFT
    for k, name in enumerate(class_names):
        c = colour(name)
        pts = np.stack([xs, _ys(probs[:, k], y0, y1, SHIFT)], axis=1)
        segments = []
        for a, b in runs:
            seg = pts[a:b]
            seg = seg[np.r_[True, (np.diff(seg, axis=0) != 0).any(axis=1)]]  # no repeated points
            if len(seg) > 1:
                segments.append(seg.reshape(-1, 1, 2))
            elif not dots:
                cv2.circle(img, (int(seg[0, 0]), int(seg[0, 1])), 2 << SHIFT, c, -1, cv2.LINE_AA, SHIFT)
        if segments:
            cv2.polylines(img, segments, False, c, 1, cv2.LINE_AA, SHIFT)
        if dots:
            for x, y in pts.tolist():
                cv2.circle(img, (x, y), 2 << SHIFT, c, -1, cv2.LINE_AA, SHIFT)


def _xs(t: np.ndarray, lo: float, hi: float, x0: int, x1: int, shift: int = 0) -> np.ndarray:
    """Pixel columns of times ``t`` (in fixed point with ``shift`` fractional bits)."""
    x = x0 + PAD + (np.asarray(t, float) - lo) / (hi - lo) * (x1 - x0 - 2 * PAD)
    return np.rint(x * (1 << shift)).astype(np.int32)


def _ys(p: np.ndarray, y0: int, y1: int, shift: int = 0) -> np.ndarray:
    """Pixel rows of probabilities ``p`` (in fixed point with ``shift`` fractional bits)."""
    y = y1 - PAD - np.clip(p, 0, 1) * (y1 - y0 - 2 * PAD)
    return np.rint(y * (1 << shift)).astype(np.int32)


def _legend_rows(class_names: Sequence[str], width: int) -> list[list[tuple[str, int]]]:
    """The legend's entries (name, width in pixels) in rows that fit the image, one when they can."""
    rows: list[list[tuple[str, int]]] = [[]]
    used = 0
    for name in class_names:
        w = 30 + cv2.getTextSize(name, FONT, LABEL_SCALE, 1)[0][0]
        if rows[-1] and used + 24 + w > width - 40:
            rows.append([])
            used = 0
        used += (24 if rows[-1] else 0) + w
        rows[-1].append((name, w))
    return rows if class_names else []


def _legend(img, rows, top: int) -> None:
    """A colour swatch (a line with a dot) and the name of each class, each row centred."""
    width = img.shape[1]
    for r, row in enumerate(rows):
        total = sum(w for _, w in row) + 24 * (len(row) - 1)
        x, y = (width - total) // 2, top + r * LEGEND_ROW_H + LEGEND_ROW_H // 2
        for name, w in row:
            c = colour(name)
            cv2.line(img, (x, y), (x + 22, y), c, 2, cv2.LINE_AA)
            cv2.circle(img, (x + 11, y), 3, c, -1, cv2.LINE_AA)
            _text(img, name, (x + 30, y), LABEL_SCALE, INK, 1, "lc")
            x += w + 24


def _text(img, text: str, at: tuple[int, int], scale: float, c, thick: int, anchor: str) -> None:
    """``text`` placed by ``anchor``: horizontal l/c/r, then vertical t (top), c (centre) or b (baseline)."""
    (w, h), _ = cv2.getTextSize(text, FONT, scale, thick)
    x, y = at
    x -= {"l": 0, "c": w // 2, "r": w}[anchor[0]]
    y += {"t": h, "c": h // 2, "b": 0}[anchor[1]]
    cv2.putText(img, text, (int(x), int(y)), FONT, scale, c, thick, cv2.LINE_AA)


def _vertical_text(img, text: str, centre: tuple[int, int], scale: float, c) -> None:
    """``text`` rotated a quarter turn anticlockwise (read bottom to top), centred on ``centre``."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    strip = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(strip, text, (2, h + 2), FONT, scale, c, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    sh, sw = strip.shape[:2]
    y, x = centre[1] - sh // 2, centre[0] - sw // 2
    region = img[max(y, 0) : y + sh, max(x, 0) : x + sw]
    np.minimum(region, strip[: region.shape[0], : region.shape[1]], out=region)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()  # Hershey fonts have ASCII only


def _fit(text: str, width: int, scale: float, thick: int) -> str:
    """``text``, shortened in the middle with '...' if need be, at most ``width`` pixels wide."""

    def fits(s: str) -> bool:
        return cv2.getTextSize(s, FONT, scale, thick)[0][0] <= width

    for keep in range(len(text), 1, -1):
        s = text if keep == len(text) else text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2 :]
        if fits(s):
            return s
    return text[:1] + "..."
