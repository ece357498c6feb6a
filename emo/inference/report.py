"""A video's emotions over time: the per-frame CSV, a timeline plot and a summary per face.

    emo-predict clip.mp4 --report out/        # out/clip.csv, clip_timeline.png, clip_summary.json

The summary gives, for each face id (the same person across frames), how long it was seen and
the share of its frames in which each emotion was the dominant one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from emo.inference.draw import colour
from emo.inference.recognizer import Face
from emo.inference.video import csv_columns, csv_rows

#: Faces drawn in the timeline, longest seen first (a crowd would make it unreadable).
MAX_TIMELINE_FACES = 8


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

    def timeline(self, summary: dict[str, Any]) -> Figure:
        """Each class's probability over time, one panel per face id (the longest seen first)."""
        ids = [int(i) for i in summary["faces"]][:MAX_TIMELINE_FACES]
        fig = Figure(figsize=(11, 1.2 + 2.2 * max(len(ids), 1)), constrained_layout=True)
        axes = fig.subplots(max(len(ids), 1), 1, squeeze=False)[:, 0]
        for ax, face_id in zip(axes, ids):
            t = np.array([time for _, time, faces in self.frames for f in faces if f.face_id == face_id])
            probs = np.array([f.probs for _, _, faces in self.frames for f in faces if f.face_id == face_id])
            for k, name in enumerate(self.class_names):
                bgr = colour(name)
                ax.plot(t, probs[:, k], ".-", ms=2, lw=1, color=np.array(bgr[::-1]) / 255, label=name)
            ax.set(ylim=(0, 1), ylabel="probability", title=f"face #{face_id}")
            ax.grid(alpha=0.3)
        if not ids:
            axes[0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0].transAxes)
        axes[-1].set_xlabel("time (s)")
        fig.suptitle(self.video.name)
        if ids:
            fig.legend(
                *axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=len(self.class_names)
            )
        return fig

    def write(self, out_dir: str | Path, stderr: bool = False) -> dict[str, Path]:
        """Write ``<stem>.csv``, ``<stem>_timeline.png`` and ``<stem>_summary.json`` to ``out_dir``
        and print the summary (on stderr when stdout carries JSON or CSV)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = self.video.stem
        paths = {
            "csv": out_dir / f"{stem}.csv",
            "timeline": out_dir / f"{stem}_timeline.png",
            "summary": out_dir / f"{stem}_summary.json",
        }
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(csv_columns(self.class_names))
            for frame, time, faces in self.frames:
                writer.writerows(csv_rows(frame, time, faces, self.class_names))
        summary = self.summary()
        self.timeline(summary).savefig(paths["timeline"], dpi=100)
        paths["summary"].write_text(json.dumps(summary, indent=1) + "\n")
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
