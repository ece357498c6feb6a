"""Emotions of the faces in images, folders of images and video files.

    emo-predict photo.jpg photos/ clip.mp4                 # a table on stdout
    emo-predict photos/ --json > faces.json                 # or --csv
    emo-predict photos/ --save-dir annotated/ --backend onnx
    emo-predict photos/ --tta none                          # no test-time augmentation: faster
    emo-predict clip.mp4 --report out/                    # CSV, timeline plot, summary per face

Every face found is one row (``box`` is x, y, w, h in pixels; in videos ``face`` is an id that
follows one person across frames); an image without a face is one row labelled ``(no face)``. A file that cannot be read is reported in one line on stderr, the
others still run, and the exit status is then 1.

Test-time augmentation (``--tta``) defaults to the model's recorded one: ``flip`` for the bundled
models (``emo/weights/index.json``), ``none`` for any other checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import BACKENDS
from emo.inference.detect import DETECTORS
from emo.inference.draw import annotate
from emo.inference.images import IMAGE_SUFFIXES, to_bgr
from emo.inference.preprocess import TTA_MODES
from emo.inference.recognizer import EmotionRecognizer, Face
from emo.inference.report import VideoReport
from emo.inference.video import Smoother, open_source, open_writer

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
#: Images decoded and classified together (one forward pass for all their faces).
BATCH = 16


def expand(paths: list[str]) -> Iterator[Path]:
    """Files named on the command line, folders replaced by their images and videos (sorted)."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        else:
            yield p  # missing files are reported when read


def rows_of(file: Path, frame: int | None, faces: list[Face]) -> list[dict[str, Any]]:
    """One record per face (``face``: its index in a photo, its id in a video), or one
    ``(no face)`` record."""
    base = {"file": str(file), "frame": frame}
    if not faces:
        return [{**base, "face": None, "box": None, "label": "(no face)", "scores": {}}]
    rows = []
    for i, face in enumerate(faces):
        record = face.as_dict()
        record.pop("face_id", None)
        rows.append({**base, "face": i if face.face_id is None else face.face_id, **record})
    return rows


class Predictor:
    """Runs the recognizer over files, collecting rows and writing annotated copies."""

    def __init__(
        self,
        model: EmotionRecognizer,
        tta: str | None = None,
        save_dir: str | Path | None = None,
        report_dir: str | Path | None = None,
        progress: bool | None = None,
        quiet_stdout: bool = False,
    ):
        # tta None: the model's own default (a bundled model's recorded TTA).
        self.model, self.tta = model, model.tta if tta is None else tta
        self.save_dir = Path(save_dir) if save_dir else None
        self.report_dir = Path(report_dir) if report_dir else None
        # A bar over a video's frames: with --report, or when stderr is a terminal.
        self.progress = bool(report_dir) or sys.stderr.isatty() if progress is None else progress
        self.reports: list[dict[str, Path]] = []
        self.quiet_stdout = quiet_stdout  # stdout carries JSON or CSV: tables go to stderr
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.saved: list[Path] = []
        self._names: set[str] = set()
        if self.save_dir:  # before any work: a bad folder is found now, not after the last file
            if self.save_dir.exists() and not self.save_dir.is_dir():
                raise EmoError(
                    f"--save-dir {self.save_dir} is a file: give a folder for the annotated copies"
                )
            try:
                self.save_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise EmoError(
                    f"--save-dir {self.save_dir}: cannot create that folder ({err.strerror or err}): "
                    "choose a folder you can write to"
                ) from None
            if not self.save_dir.is_dir() or not os.access(self.save_dir, os.W_OK):
                raise EmoError(
                    f"--save-dir {self.save_dir} is not a writable folder: choose one you can write to"
                )

    def error(self, message: str) -> None:
        self.errors.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)

    def out_path(self, src: Path, suffix: str) -> Path:
        """``save_dir/<stem><suffix>``, numbered when two inputs share a stem."""
        name, i = f"{src.stem}{suffix}", 1
        while name in self._names:
            name, i = f"{src.stem}-{i}{suffix}", i + 1
        self._names.add(name)
        return self.save_dir / name  # the folder was made, and checked, in __init__

    def images(self, files: list[Path]) -> None:
        for start in range(0, len(files), BATCH):
            loaded = []
            for f in files[start : start + BATCH]:
                try:
                    loaded.append((f, to_bgr(f)))
                except EmoError as err:
                    self.error(str(err))
            if not loaded:
                continue
            results = self.model.predict([im for _, im in loaded], tta=self.tta)
            for (f, image), faces in zip(loaded, results):
                self.rows += rows_of(f, None, faces)
                if self.save_dir:
                    out = self.out_path(f, "_annotated.png")
                    try:
                        written = cv2.imwrite(str(out), annotate(image, faces))
                    except cv2.error:
                        written = False
                    if written:
                        self.saved.append(out)
                    else:
                        self.error(f"could not write {out}: check that {self.save_dir} is a writable folder")

    def video(self, file: Path) -> None:
        try:
            cap, _ = open_source(file)
        except EmoError as err:
            self.error(str(err))
            return
        writer, n = None, 0
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        fps = fps if 1 <= fps <= 240 else 30.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        ids = Smoother(alpha=0.0)  # face ids across frames; the probabilities are each frame's own
        report = VideoReport(file, self.model.class_names, fps) if self.report_dir else None
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not self.progress,
            transient=True,
        )
        try:
            bar.start()
            task = bar.add_task(file.name, total=total)
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                faces = ids(self.model.predict(frame, self.tta))  # every frame searched in full
                self.rows += rows_of(file, n, faces)
                if report is not None:
                    report.add(n, faces)
                bar.advance(task)
                if self.save_dir:
                    if writer is None:
                        out = self.out_path(file, "_annotated.mp4")
                        writer = open_writer(out, fps, frame.shape)
                        self.saved.append(out)
                    writer.write(annotate(frame, faces))
                n += 1
        finally:
            bar.stop()
            cap.release()
            if writer is not None:
                writer.release()
        if n == 0:
            self.error(f"cannot read {file}: no frame could be decoded (a corrupt or empty video)")
        elif report is not None:
            self.reports.append(report.write(self.report_dir, stderr=self.quiet_stdout))

    def run(self, paths: list[str]) -> None:
        files = list(expand(paths))
        if self.save_dir:  # an input that lives in the output folder is never written over
            out = self.save_dir.resolve()
            self._names |= {f.name for f in files if f.resolve().parent == out}
        videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
        self.images([f for f in files if f not in videos])
        for v in videos:
            self.video(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title_justify="left")
    for col in ("file", "frame", "face", "box (x, y, w, h)", "label", "p"):
        table.add_column(col, justify="right" if col in ("frame", "face", "p") else "left")
    for r in rows:
        box = ", ".join(map(str, r["box"])) if r["box"] else ""
        p = f"{r['scores'][r['label']]:.2f}" if r["scores"] else ""
        frame = "" if r["frame"] is None else str(r["frame"])
        face = "" if r["face"] is None else str(r["face"])
        table.add_row(r["file"], frame, face, box, r["label"], p)
    Console(width=max(100, Console().width)).print(table)


def write_csv(rows: list[dict[str, Any]], class_names: list[str]) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["file", "frame", "face", "x", "y", "w", "h", "label", *class_names])
    for r in rows:
        box = r["box"] or ["", "", "", ""]
        probs = [f"{r['scores'][c]:.4f}" if r["scores"] else "" for c in class_names]
        w.writerow(
            [
                r["file"],
                "" if r["frame"] is None else r["frame"],
                "" if r["face"] is None else r["face"],
                *box,
                r["label"],
                *probs,
            ]
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog("emo-predict"), description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, folders of images, video files")
    p.add_argument(
        "--model",
        "--ckpt",
        dest="ckpt",
        metavar="MODEL",
        help="a bundled name (vgg_s_people, ...) or purpose (default, fast, leaderboard, ferplus), an "
        ".onnx/.ckpt file or a training run directory (default: default)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="inference runtime (default auto: a bundled model's recorded one, onnxruntime for .onnx, torch for .ckpt)",
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation (default: the model's recorded TTA, e.g. flip for the bundled models; "
        "none for other checkpoints)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON on stdout instead of a table")
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    p.add_argument("--save-dir", help="write annotated copies (images as .png, videos as .mp4) here")
    p.add_argument(
        "--report",
        metavar="DIR",
        help="for each video: a per-frame CSV, a timeline plot and a summary per face (JSON + table) in DIR",
    )
    p.add_argument(
        "--detector", default="yunet", choices=list(DETECTORS), help="face detector (default: yunet)"
    )
    return p.parse_args(argv)


@exit_on_emo_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = EmotionRecognizer.load(args.ckpt, backend=args.backend, detector=args.detector)
    predictor = Predictor(model, args.tta, args.save_dir, args.report, quiet_stdout=args.json or args.csv)
    predictor.run(args.paths)
    if args.json:
        json.dump(predictor.rows, sys.stdout, indent=1)
        print()
    elif args.csv:
        write_csv(predictor.rows, model.class_names)
    else:
        # With --report a video's frames are in its CSV and summary: the table keeps to images.
        rows = [r for r in predictor.rows if not args.report or r["frame"] is None]
        if rows:
            print_table(rows)
    if predictor.saved:
        print(f"wrote {len(predictor.saved)} annotated file(s) to {args.save_dir}", file=sys.stderr)
    for report in predictor.reports:
        print(f"wrote {', '.join(str(p) for p in report.values())}", file=sys.stderr)
    return 1 if predictor.errors else 0


def cli() -> None:
    """Console entry point (``emo-predict``, ``python -m emo.inference.predict``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
