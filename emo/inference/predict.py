"""Emotions of the faces in images, folders of images and video files.

    emo-predict photo.jpg photos/ clip.mp4                 # a table on stdout
    emo-predict photos/ --json > faces.json                 # or --csv
    emo-predict photos/ --save-dir annotated/ --backend onnx
    emo-predict photos/ --tta none                          # no test-time augmentation: faster
    emo-predict clip.mp4 --report out/                    # CSV, timeline plot, summary per face

Every face found is one row (``box`` is x, y, w, h in pixels; in videos ``face`` is an id that
follows one person across frames); an image without a face is one row labelled ``(no face)``.
A file that cannot be read (missing, corrupt, over the ``--max-pixels`` limit) is reported in one
``error:`` line on stderr, a video whose frames stop before its container's frame count in one
``warning:`` line; the other files still run, and the exit status is then 1.

Outputs are checked before any work (``--save-dir`` and ``--report`` must be folders that can be
written) and written atomically; an annotated copy never replaces an existing file (names that
clash are numbered) unless ``--overwrite``, and never an input.

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
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import BACKENDS
from emo.inference.detect import DETECTORS
from emo.inference.draw import annotate
from emo.inference.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    check_max_pixels,
    check_output,
    exists,
    is_dir,
    make_folder,
    os_reason,
    shown,
    to_bgr,
    write_image,
)
from emo.inference.preprocess import TTA_MODES
from emo.inference.recognizer import EmotionRecognizer, Face
from emo.inference.report import VideoReport
from emo.inference.video import (
    Smoother,
    check_frame_size,
    frame_count,
    open_source,
    open_writer,
    stopped_early,
)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
#: Images decoded and classified together (one forward pass for all their faces) ...
BATCH = 16
#: ... and at most this many pixels of them held at once (then the batch runs): 16 photos of
#: 48 M pixels would otherwise be 2.3 GB of BGR in memory together.
BATCH_PIXELS = MAX_PIXELS


def progress_bar(show: bool) -> Progress:
    """A bar (description, bar, done/total, time left) on stderr that clears when done; shared
    by emo predict's videos and emo analyze's sources and frames."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
        transient=True,
    )


def expand(paths: list[str], errors: list[str] | None = None) -> Iterator[Path]:
    """Files named on the command line, folders replaced by their images and videos (sorted);
    a folder that cannot be listed is added to ``errors``."""
    for p in map(Path, paths):
        if is_dir(p):
            try:
                files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            except OSError as err:
                if errors is None:
                    raise EmoError(f"cannot list {shown(p)}: {os_reason(err)}") from None
                errors.append(f"cannot list {shown(p)}: {os_reason(err)}")
                continue
            yield from files
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
    """Runs the recognizer over files, collecting rows and writing annotated copies.

    Args:
        max_pixels: the largest image or video frame (width x height) read; larger ones are
            reported and skipped, before they are decoded.
        overwrite: annotated copies may replace existing files in ``save_dir`` (never inputs).
    """

    def __init__(
        self,
        model: EmotionRecognizer,
        tta: str | None = None,
        save_dir: str | Path | None = None,
        report_dir: str | Path | None = None,
        progress: bool | None = None,
        quiet_stdout: bool = False,
        max_pixels: int | None = None,
        overwrite: bool = False,
    ):
        # tta None: the model's own default (a bundled model's recorded TTA).
        self.model, self.tta = model, model.tta if tta is None else tta
        self.max_pixels = check_max_pixels(model.max_pixels if max_pixels is None else max_pixels)
        self.overwrite = overwrite
        self.save_dir = Path(save_dir) if save_dir else None
        self.report_dir = Path(report_dir) if report_dir else None
        # A bar over a video's frames: with --report, or when stderr is a terminal.
        self.progress = bool(report_dir) or sys.stderr.isatty() if progress is None else progress
        self.reports: list[dict[str, Path]] = []
        self.quiet_stdout = quiet_stdout  # stdout carries JSON or CSV: tables go to stderr
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.saved: list[Path] = []
        self._names: set[str] = set()
        self._inputs: set[Path] = set()
        # Before any work: a bad folder is found now, not after the last file.
        if self.save_dir:
            if exists(self.save_dir) and not is_dir(self.save_dir):
                raise EmoError(
                    f"--save-dir {shown(self.save_dir)} is a file: give a folder for the annotated copies"
                )
            check_output(self.save_dir, "--save-dir", folder=True)
            make_folder(self.save_dir, "--save-dir")
            if not os.access(self.save_dir, os.W_OK | os.X_OK):
                raise EmoError(
                    f"--save-dir {shown(self.save_dir)} is not a writable folder: choose one you can write to"
                )
        if self.report_dir:
            check_output(self.report_dir, "--report", folder=True)

    def error(self, message: str) -> None:
        self.errors.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def out_path(self, src: Path, suffix: str) -> Path:
        """``save_dir/<stem><suffix>``, numbered when two inputs share a stem, when the name is an
        input's, or (without ``overwrite``) when a file of that name exists."""
        assert self.save_dir is not None  # the folder was made, and checked, in __init__
        stem = src.stem[:200]  # the suffix must fit the system's 255-byte names

        def taken(name: str) -> bool:
            path = self.save_dir / name
            try:
                present = path.exists() or path.is_symlink()
            except OSError:
                present = False
            return name in self._names or (present and (not self.overwrite or path.resolve() in self._inputs))

        name, i = f"{stem}{suffix}", 1
        while taken(name):
            name, i = f"{stem}-{i}{suffix}", i + 1
        self._names.add(name)
        return self.save_dir / name

    def save_image(self, src: Path, image: np.ndarray, faces: list[Face]) -> None:
        out = self.out_path(src, "_annotated.png")
        try:
            write_image(out, annotate(image, faces), "--save-dir")
        except EmoError as err:
            self.error(str(err))
        else:
            self.saved.append(out)

    def images(self, files: list[Path]) -> None:
        batch: list[tuple[Path, np.ndarray]] = []
        pixels = 0
        for f in files:
            try:
                image = to_bgr(f, self.max_pixels)
            except EmoError as err:
                self.error(str(err))
                continue
            batch.append((f, image))
            pixels += image.shape[0] * image.shape[1]
            if len(batch) >= BATCH or pixels >= BATCH_PIXELS:
                self.classify_batch(batch)
                batch, pixels = [], 0
        if batch:
            self.classify_batch(batch)

    def classify_batch(self, batch: list[tuple[Path, np.ndarray]]) -> None:
        """Faces of decoded images, in one forward pass; one at a time if the batch fails, so a
        bad image costs only its own row."""
        try:
            results = self.model.predict([im for _, im in batch], tta=self.tta, max_pixels=self.max_pixels)
        except EmoError:
            results = []
            for f, image in batch:
                try:
                    results.append(self.model.predict(image, tta=self.tta, max_pixels=self.max_pixels))
                except EmoError as err:
                    self.error(f"{shown(f)}: {err}")
                    results.append(None)
        for (f, image), faces in zip(batch, results):
            if faces is None:
                continue
            self.rows += rows_of(f, None, faces)
            if self.save_dir:
                self.save_image(f, image, faces)

    def video(self, file: Path) -> None:
        try:
            cap, _ = open_source(file)
        except EmoError as err:
            self.error(str(err))
            return
        try:
            check_frame_size(cap, shown(file), self.max_pixels)
        except EmoError as err:
            cap.release()
            self.error(str(err))
            return
        writer, n = None, 0
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        fps = fps if 1 <= fps <= 240 else 30.0
        total = frame_count(cap)
        ids = Smoother(alpha=0.0)  # face ids across frames; the probabilities are each frame's own
        report = VideoReport(file, self.model.class_names, fps) if self.report_dir else None
        bar = progress_bar(self.progress)
        failed = None
        try:
            bar.start()
            task = bar.add_task(file.name[:60], total=total)
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                faces = ids(
                    self.model.predict(frame, self.tta, max_pixels=self.max_pixels)
                )  # every frame searched in full
                self.rows += rows_of(file, n, faces)
                if report is not None:
                    report.add(n, faces)
                bar.advance(task)
                if self.save_dir:
                    if writer is None:
                        out = self.out_path(file, "_annotated.mp4")
                        writer = open_writer(out, fps, frame.shape)
                    writer.write(annotate(frame, faces))
                n += 1
        except EmoError as err:  # a frame over the limit, an unwritable video: this file only
            failed = str(err)
        finally:
            bar.stop()
            cap.release()
        if writer is not None:
            try:
                writer.release()  # checks the frame count, then moves the file into place
            except EmoError as err:
                self.error(str(err))
            else:
                self.saved.append(writer.path)
        if failed:
            self.error(f"{shown(file)}: {failed}" if str(file) not in failed else failed)
            return
        if n == 0:
            self.error(f"cannot read {shown(file)}: no frame could be decoded (a corrupt or empty video)")
            return
        short = stopped_early(shown(file), n, total)
        if short:
            self.warn(short)
        if report is not None:
            try:
                self.reports.append(report.write(self.report_dir, stderr=self.quiet_stdout))
            except EmoError as err:
                self.error(str(err))

    def run(self, paths: list[str]) -> None:
        listing_errors: list[str] = []
        files = list(expand(paths, listing_errors))
        for message in listing_errors:
            self.error(message)
        for f in files:
            try:
                self._inputs.add(f.resolve())
            except (OSError, RuntimeError):
                pass
        if self.save_dir:  # an input that lives in the output folder is never written over
            out = self.save_dir.resolve()
            self._names |= {f.name for f in self._inputs if f.parent == out}
        if self.report_dir:  # nor one that a report would be written as
            for f in files:
                if f.suffix.lower() in VIDEO_SUFFIXES:
                    for path in VideoReport(f, [], 1.0).paths(self.report_dir).values():
                        try:
                            clash = path.resolve() in self._inputs
                        except (OSError, RuntimeError):
                            clash = False
                        if clash:
                            raise EmoError(
                                f"--report {shown(self.report_dir)} would write over the input {shown(path)}: choose another folder"
                            )
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
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"largest image or video frame, width x height: larger ones are refused before they are "
        f"decoded (default: {MAX_PIXELS:,})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="annotated copies may replace existing files in --save-dir (default: such names are numbered; "
        "inputs are never replaced)",
    )
    return p.parse_args(argv)


@exit_on_emo_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # FFmpeg (inside OpenCV) prints an error per damaged macroblock: thousands of lines for one
    # corrupt video, which emo reports in one. A level the user set is kept.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    max_pixels = check_max_pixels(args.max_pixels)
    # The outputs before the model: a bad folder is found in a second, not after loading.
    predictor_args = dict(quiet_stdout=args.json or args.csv, max_pixels=max_pixels, overwrite=args.overwrite)
    for option, folder in (("--save-dir", args.save_dir), ("--report", args.report)):
        if folder:
            if exists(Path(folder)) and not is_dir(Path(folder)) and option == "--save-dir":
                raise EmoError(
                    f"--save-dir {shown(folder)} is a file: give a folder for the annotated copies"
                )
            check_output(folder, option, folder=True)
    model = EmotionRecognizer.load(
        args.ckpt, backend=args.backend, detector=args.detector, max_pixels=max_pixels
    )
    predictor = Predictor(model, args.tta, args.save_dir, args.report, **predictor_args)
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
        print(f"wrote {len(predictor.saved)} annotated file(s) to {shown(args.save_dir)}", file=sys.stderr)
    for report in predictor.reports:
        print(f"wrote {', '.join(str(p) for p in report.values())}", file=sys.stderr)
    # 1: some inputs could not be read, or not fully (a video that stopped early); the rest ran.
    return 1 if predictor.errors or predictor.warnings else 0


def cli() -> None:
    """Console entry point (``emo-predict``, ``python -m emo.inference.predict``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
