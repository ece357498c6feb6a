"""Emotions across a whole archive of videos and photos, into Parquet, resumable, on this machine
or a Ray cluster.

    emo analyze sessions/ --out results/                    # every video and photo under sessions/
    emo analyze 'ads/*.mp4' list.txt --out results/ --fps 2 --workers 2
    emo analyze sessions/ --out results/ --engine ray       # a local Ray, or --address auto|ray://host:10001

Writes, under ``--out``:

- ``faces/``: one row per face per sampled frame: ``source, frame, time_s, face_id, x, y, w, h,
  label, score`` and one probability column per class; a sampled frame with no face is one row
  with nulls after ``time_s``.
- ``summary/``: one row per source and face id: frames and seconds seen, the dominant emotion,
  each emotion's share of the face's frames, its mean probability and the time of its peak, and
  the source's totals (a source with no face: one row, ``face_id`` null).
- ``failures/``: ``source, error`` for every source that could not be read.
- ``run.json``: the model, its TTA and recorded accuracy, emo's version, the options, start and
  end, counts.

Each source's rows go to files of their own (``<key>.parquet``, written under a hidden temporary
name, then renamed), its summary last: a source with a summary is finished, and running the same
command again skips it. Killing the job loses at most the sources in flight. Frames are read one
at a time and never held; rows are written in row groups as they come.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import emo
from emo import weights
from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import BACKENDS
from emo.inference.detect import DETECTORS
from emo.inference.images import IMAGE_SUFFIXES, read_image, write_bytes
from emo.inference.predict import VIDEO_SUFFIXES, progress_bar
from emo.inference.preprocess import TTA_MODES
from emo.inference.recognizer import EmotionRecognizer, Face
from emo.inference.video import Smoother, frame_count, stopped_early

LIST_SUFFIXES = {".txt", ".lst"}
#: Default sampling: frames a second of video.
DEFAULT_FPS = 5.0
#: Frames are searched for faces on a copy this many pixels on its longer side, faces from 40 px of
#: that copy up, as the real-time path does (320: a 640x480 frame at half size; 640 for small
#: faces in wide shots, at ~3x the detection time).
DETECT_SIZE = 320
#: Rows buffered before a Parquet row group is written (bounded memory on long videos).
ROW_GROUP = 20_000
TABLES = ("faces", "summary", "failures")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise EmoError(
            "emo analyze writes Parquet with pyarrow, which is not installed: pip install 'emo[analyze]'"
        ) from None
    return pa, pq


@dataclass(frozen=True)
class Options:
    """What decides a source's rows (``run.json`` records it; a resumed run must match it)."""

    model: str = "default"
    backend: str = "auto"
    tta: str | None = "none"
    detector: str | None = None
    every: int | None = None
    fps: float = DEFAULT_FPS
    batch_size: int = 16
    detect_size: int = DETECT_SIZE

    def check(self) -> None:
        if self.every is not None and self.every < 1:
            raise EmoError(f"--every {self.every}: give a whole number of frames >= 1")
        if not self.fps > 0:
            raise EmoError(f"--fps {self.fps}: give frames a second > 0 (e.g. 5)")
        if self.detect_size < 64:
            raise EmoError(
                f"--detect-size {self.detect_size}: give the side, in pixels, frames are searched at (>= 64)"
            )
        if self.batch_size < 1:
            raise EmoError(f"--batch-size {self.batch_size}: give a whole number >= 1")
        if self.tta is not None and self.tta not in TTA_MODES:
            raise EmoError(f"--tta {self.tta}: use one of {', '.join(TTA_MODES)}")

    def step(self, video_fps: float) -> int:
        """Frames between two sampled frames of a video at ``video_fps``."""
        if self.every is not None:
            return self.every
        return max(1, round(video_fps / self.fps))


@dataclass
class SourceResult:
    """What one source produced (the engines return these; the rows are on disk)."""

    source: str
    key: str
    rows: int = 0
    frames: int = 0
    faces: int = 0
    error: str | None = None
    warning: str | None = None
    seconds: float = 0.0


# ----------------------------------------------------------------------------- sources
def source_key(source: str) -> str:
    """The file name of a source's rows: a hash of the source as given, resolved."""
    return hashlib.sha1(source.encode()).hexdigest()[:20]


def _local(source: str) -> str:
    return source[len("file://") :] if source.startswith("file://") else source


def _resolved(path: Path) -> str:
    """A local source as one spelling (absolute, symlinks resolved), so that the same file named
    two ways is one source (one key, one set of rows)."""
    try:
        return str(path.resolve())
    except OSError:  # a name too long to resolve: kept as given, it fails as a source
        return str(path)


def expand_sources(specs: Sequence[str]) -> list[str]:
    """Video and image files from files, folders (recursive), globs, ``file://`` URLs, text files
    listing one source a line, and remote URLs (``s3://...``: passed on as they are), in order,
    each once. A name that matches nothing is kept: it becomes a failure row, not a stop."""
    out: list[str] = []
    for spec in specs:
        spec = str(spec)
        if "://" in spec and not spec.startswith("file://"):
            out.append(spec)
            continue
        path = Path(_local(spec))
        if path.is_dir():
            found = [
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            ]
            out += [_resolved(p) for p in sorted(found)]
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
            out += expand_sources([ln for ln in lines if ln and not ln.startswith("#")])
        elif not path.exists() and glob.has_magic(str(path)):
            matches = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            out += [_resolved(Path(p)) for p in matches] or [spec]  # no match: a failure row
        else:
            out.append(_resolved(path))
    return list(dict.fromkeys(out))


@contextlib.contextmanager
def _fetched(source: str) -> Iterator[Path]:
    """A local path for ``source``: itself, or a temporary copy of a remote one (fsspec)."""
    if "://" not in source or source.startswith("file://"):
        yield Path(_local(source))
        return
    try:
        import fsspec
    except ModuleNotFoundError:
        raise EmoError(f"{source}: reading remote sources needs fsspec (pip install fsspec s3fs)") from None
    with tempfile.TemporaryDirectory(prefix="emo-analyze-") as tmp:
        local = Path(tmp) / Path(source.split("?")[0]).name
        with fsspec.open(source, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst)
        yield local


# ----------------------------------------------------------------------------- one source
def columns(class_names: Sequence[str]) -> list[str]:
    return ["source", "frame", "time_s", "face_id", "x", "y", "w", "h", "label", "score", *class_names]


def face_schema(class_names: Sequence[str]):
    pa, _ = _pyarrow()
    fields = [
        ("source", pa.string()),
        ("frame", pa.int64()),
        ("time_s", pa.float64()),
        ("face_id", pa.int64()),
        ("x", pa.int64()),
        ("y", pa.int64()),
        ("w", pa.int64()),
        ("h", pa.int64()),
        ("label", pa.string()),
        ("score", pa.float32()),
    ]
    return pa.schema(fields + [(c, pa.float32()) for c in class_names])


def summary_schema(class_names: Sequence[str]):
    pa, _ = _pyarrow()
    fields = [
        ("source", pa.string()),
        ("kind", pa.string()),
        ("face_id", pa.int64()),
        ("frames", pa.int64()),
        ("seconds", pa.float64()),
        ("dominant", pa.string()),
        *[(f"share_{c}", pa.float64()) for c in class_names],
        *[(f"mean_{c}", pa.float64()) for c in class_names],
        *[(f"peak_{c}_s", pa.float64()) for c in class_names],
        ("source_frames", pa.int64()),
        ("source_seconds", pa.float64()),
        ("source_faces", pa.int64()),
        ("frames_without_a_face", pa.int64()),
        ("step", pa.int64()),
        ("video_fps", pa.float64()),
        ("warning", pa.string()),
    ]
    return pa.schema(fields)


FAILURE_COLUMNS = ("source", "error")


class _Writer:
    """Rows of one table for one source, in row groups, under a hidden name until ``commit``."""

    def __init__(self, out: Path, table: str, key: str, schema):
        _, self.pq = _pyarrow()
        self.schema, self.final = schema, out / table / f"{key}.parquet"
        self.tmp = self.final.with_name(f".{key}.{os.getpid()}.tmp")
        self.rows: list[dict] = []
        self.writer = None

    def add(self, rows: Iterable[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        pa, _ = _pyarrow()
        if self.writer is None:
            self.writer = self.pq.ParquetWriter(self.tmp, self.schema)
        if self.rows:  # column by column: from_pylist would import pandas in every worker
            data = {name: [row.get(name) for row in self.rows] for name in self.schema.names}
            self.writer.write_table(pa.Table.from_pydict(data, schema=self.schema))
            self.rows = []

    def commit(self) -> None:
        self.flush()
        self.writer.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class _Summary:
    """Per face id: frames seen, label counts, probability sums and each class's peak."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.faces: dict[int, dict[str, Any]] = {}
        self.frames = 0
        self.empty = 0

    def add(self, time_s: float | None, faces: Sequence[Face]) -> None:
        self.frames += 1
        self.empty += not faces
        for f in faces:
            s = self.faces.setdefault(
                f.face_id,
                {
                    "n": 0,
                    "labels": dict.fromkeys(self.class_names, 0),
                    "sum": np.zeros(len(self.class_names)),
                    "peak": np.full(len(self.class_names), -1.0),
                    "peak_t": [None] * len(self.class_names),
                },
            )
            s["n"] += 1
            s["labels"][f.label] += 1
            p = np.array([f.scores[c] for c in self.class_names])
            s["sum"] += p
            better = p > s["peak"]
            s["peak"] = np.where(better, p, s["peak"])
            s["peak_t"] = [time_s if b else t for b, t in zip(better, s["peak_t"])]

    def rows(self, source: str, kind: str, step: int, fps: float | None, warning: str | None) -> list[dict]:
        per_frame = step / fps if fps else None
        totals = {
            "source_frames": self.frames,
            "source_seconds": round(self.frames * per_frame, 3) if per_frame else None,
            "source_faces": len(self.faces),
            "frames_without_a_face": self.empty,
            "step": step,
            "video_fps": fps,
            "warning": warning,
        }
        if not self.faces:
            return [
                {
                    "source": source,
                    "kind": kind,
                    "face_id": None,
                    "frames": 0,
                    "seconds": 0.0 if per_frame else None,
                    **totals,
                }
            ]
        out = []
        for face_id, s in sorted(self.faces.items(), key=lambda kv: (-kv[1]["n"], kv[0])):
            share = {c: s["labels"][c] / s["n"] for c in self.class_names}
            row = {
                "source": source,
                "kind": kind,
                "face_id": face_id,
                "frames": s["n"],
                "seconds": round(s["n"] * per_frame, 3) if per_frame else None,
                "dominant": max(share, key=share.get),
                **{f"share_{c}": round(v, 6) for c, v in share.items()},
                **{f"mean_{c}": round(float(v) / s["n"], 6) for c, v in zip(self.class_names, s["sum"])},
                **{f"peak_{c}_s": t for c, t in zip(self.class_names, s["peak_t"])},
                **totals,
            }
            out.append(row)
        return out


def face_rows(
    source: str, frame: int, time_s: float | None, faces: Sequence[Face], class_names: Sequence[str]
) -> list[dict]:
    """The ``faces`` rows of one sampled frame: one per face, or one with nulls."""
    if not faces:
        return [{"source": source, "frame": frame, "time_s": time_s}]
    return [
        {
            "source": source,
            "frame": frame,
            "time_s": time_s,
            "face_id": f.face_id,
            "x": int(f.box[0]),
            "y": int(f.box[1]),
            "w": int(f.box[2]),
            "h": int(f.box[3]),
            "label": f.label,
            "score": f.scores[f.label],
            **{c: f.scores[c] for c in class_names},
        }
        for f in faces
    ]


def _frames(cap: cv2.VideoCapture, step: int, seen: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Every ``step``-th frame of an open video, one at a time (the others are grabbed, not
    decoded); ``seen[0]`` counts the frames the file gave."""
    n = 0
    while True:
        if n % step == 0:
            ok, frame = cap.read()
            if not ok:
                break
            seen[0] = n + 1
            yield n, frame
        elif not cap.grab():
            break
        else:
            seen[0] = n + 1
        n += 1


def analyze_source(
    source: str,
    out: Path,
    recognizer: EmotionRecognizer,
    options: Options,
    on_frames: Callable[[int], None] | None = None,
    report_dir: Path | None = None,
) -> SourceResult:
    """Analyse one source into ``out``'s tables; an unreadable one becomes a ``failures`` row.
    The same function runs in every engine."""
    start = time.perf_counter()
    key = source_key(source)
    result = SourceResult(source, key)
    names = recognizer.class_names
    faces_out = _Writer(out, "faces", key, face_schema(names))
    try:
        with _fetched(source) as path:
            kind, summary, step, fps, warning = _analyze(
                path, source, recognizer, options, faces_out, result, on_frames, report_dir
            )
        faces_out.commit()
        summary_out = _Writer(out, "summary", key, summary_schema(names))
        summary_out.add(summary.rows(source, kind, step, fps, warning))
        summary_out.commit()  # last: a source with a summary is finished
        result.frames, result.faces, result.warning = summary.frames, len(summary.faces), warning
    except Exception as err:  # noqa: BLE001 - any error of one source is that source's failure
        faces_out.abort()
        text = str(err) if isinstance(err, EmoError) else f"{source}: {type(err).__name__}: {err}"
        result.error = " ".join(text.split())  # one line
        fail = _Writer(out, "failures", key, failure_schema())
        fail.add([{"source": source, "error": result.error}])
        fail.commit()
    except BaseException:
        faces_out.abort()
        raise
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def failure_schema():
    pa, _ = _pyarrow()
    return pa.schema([("source", pa.string()), ("error", pa.string())])


def _analyze(path, source, recognizer, options, faces_out, result, on_frames, report_dir):
    names = recognizer.class_names
    summary = _Summary(names)
    if not path.exists():
        raise EmoError(f"{source}: not found")
    if path.is_dir():
        raise EmoError(f"{source}: a folder given where a file was expected")
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise EmoError(f"{source}: the file is empty")
    if suffix in IMAGE_SUFFIXES:
        faces = recognizer.predict(read_image(path), options.tta)
        faces = [Face(f.box, f.label, f.scores, i) for i, f in enumerate(faces)]
        rows = face_rows(source, 0, None, faces, names)
        faces_out.add(rows)
        result.rows += len(rows)
        summary.add(None, faces)
        if on_frames:
            on_frames(1)
        return "image", summary, 1, None, None
    cap = cv2.VideoCapture(str(path))
    try:
        return _video(
            cap, path, source, suffix, recognizer, options, faces_out, result, on_frames, report_dir
        )
    finally:
        cap.release()


def _video(cap, path, source, suffix, recognizer, options, faces_out, result, on_frames, report_dir):
    names = recognizer.class_names
    summary = _Summary(names)
    if not cap.isOpened():
        what = (
            "not a video or image emo can read"
            if suffix not in VIDEO_SUFFIXES
            else "cannot be decoded (corrupt, or a codec this OpenCV build lacks)"
        )
        raise EmoError(f"{source}: {what}")
    video_fps = cap.get(cv2.CAP_PROP_FPS)
    video_fps = video_fps if 1 <= video_fps <= 240 else 30.0
    step = options.step(video_fps)
    # Face ids across sampled frames: a face moves further between samples than between frames.
    ids = Smoother(alpha=0.0, min_iou=0.3 if step == 1 else 0.1)
    report = None
    if report_dir is not None:
        from emo.inference.report import VideoReport

        report = VideoReport(path, names, video_fps / step)
        report_dir = report_dir / f"{path.stem}-{source_key(source)[:8]}"  # same names, other folders
    batch: list[tuple[int, np.ndarray]] = []
    seen = [0]

    def flush() -> None:
        frames = [f for _, f in batch]
        for (n, _), found in zip(batch, recognizer.predict(frames, options.tta)):
            faces = ids(found)
            time_s = round(n / video_fps, 4)
            rows = face_rows(source, n, time_s, faces, names)
            faces_out.add(rows)
            result.rows += len(rows)
            summary.add(time_s, faces)
            if report is not None:
                report.add(n // step, faces)
        if on_frames:
            on_frames(len(batch))
        batch.clear()

    for n, frame in _frames(cap, step, seen):
        batch.append((n, frame))
        if len(batch) >= options.batch_size:
            flush()
    if batch:
        flush()
    if summary.frames == 0:
        raise EmoError(f"{source}: no frame could be decoded (an empty or corrupt video)")
    warning = stopped_early(source, seen[0], frame_count(cap))
    if report is not None and report.frames:
        report_dir.mkdir(parents=True, exist_ok=True)
        report.write(report_dir, stderr=True)
    return "video", summary, step, video_fps, warning


# ----------------------------------------------------------------------------- the run
def check_out(out: Path, overwrite: bool) -> None:
    """``--out`` is a folder that can be created and written (refused before any work)."""
    if out.exists() and not out.is_dir():
        raise EmoError(f"--out {out} is a file: give a folder (it is created if missing)")
    try:
        if overwrite and out.exists():
            for table in TABLES:
                shutil.rmtree(out / table, ignore_errors=True)
            (out / "run.json").unlink(missing_ok=True)
        for table in TABLES:
            (out / table).mkdir(parents=True, exist_ok=True)
        probe = out / f".emo-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise EmoError(
            f"--out {out} is not writable ({err.strerror or err}): choose another folder"
        ) from None


def finished(out: Path) -> set[str]:
    """Keys of the sources already analysed (a summary or a failure written) in ``out``."""
    return {p.stem for table in ("summary", "failures") for p in (out / table).glob("*.parquet")}


def load_recognizer(options: Options, threads: int = 1) -> EmotionRecognizer:
    """The model, once per worker, on ``threads`` threads (workers share the cores)."""
    cv2.setNumThreads(1)
    detector = options.detector or "yunet"
    settings: dict[str, Any] = {"max_side": options.detect_size, "min_face": 40}
    if detector == "haar":
        settings.update(min_face=80, scale_factor=1.1, min_neighbors=5)
    return EmotionRecognizer.load(
        options.model, backend=options.backend, threads=threads, detector=detector, **settings
    )


def model_record(options: Options) -> dict[str, Any]:
    """What run.json says of the model: its name, TTA and recorded accuracy when bundled."""
    spec = options.model
    if spec in (*weights.available(), *weights.ALIASES):
        name = weights.resolve_name(spec)
        info = weights.info(name)
        return {
            "model": name,
            "asked": spec,
            "tta": options.tta if options.tta is not None else info.get("tta"),
            "recorded": {
                k: info.get(k) for k in ("publictest", "privatetest", "labels", "classes", "backend")
            },
        }
    return {"model": str(spec), "tta": options.tta}


def check_model(spec: str) -> None:
    """An unknown model fails at once, before any worker starts."""
    if spec in (*weights.available(), *weights.ALIASES):
        weights.resolve_name(spec)
        return
    if not Path(spec).exists():
        raise EmoError(
            f"--model {spec}: no bundled model or file of that name; use one of "
            f"{', '.join([*weights.available(), *weights.ALIASES])}, or an .onnx/.ckpt file"
        )


# Worker-process state: the model is loaded once per worker (by the pool's initializer).
_WORKER: dict[str, Any] = {}


def _init_worker(options: Options, out: str, report_dir: str | None) -> None:
    _WORKER.update(recognizer=load_recognizer(options), options=options, out=Path(out), report=report_dir)


def _work(source: str) -> SourceResult:
    report = Path(_WORKER["report"]) if _WORKER["report"] else None
    return analyze_source(
        source, _WORKER["out"], _WORKER["recognizer"], _WORKER["options"], report_dir=report
    )


def run_local(
    sources: Sequence[str], out: Path, options: Options, workers: int, report_dir: Path | None, progress: bool
) -> list[SourceResult]:
    """The embedded engine: a pool of ``workers`` processes (in this process for 1)."""
    bar = progress_bar(progress)
    results: list[SourceResult] = []
    with bar:
        task = bar.add_task("sources", total=len(sources))
        frames = bar.add_task("frames analysed", total=None)
        if workers <= 1:
            recognizer = load_recognizer(options)
            for source in sources:
                r = analyze_source(
                    source, out, recognizer, options, lambda k: bar.advance(frames, k), report_dir
                )
                results.append(r)
                bar.advance(task)
            return results
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")  # onnxruntime and OpenCV threads do not survive fork
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(options, str(out), str(report_dir) if report_dir else None),
        ) as pool:
            futures = [pool.submit(_work, s) for s in sources]
            for future in as_completed(futures):
                r = future.result()
                results.append(r)
                bar.advance(task)
                bar.advance(frames, r.frames)
    return results


class RayAnalyzer:
    """A Ray Data actor: loads the model once, then analyses each source it is given (the same
    function and the same atomic writer as the local engine)."""

    def __init__(self, options: Options, out: str, report_dir: str | None):
        self.options, self.out = options, Path(out)
        self.report = Path(report_dir) if report_dir else None
        self.recognizer = load_recognizer(options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [
            analyze_source(str(s), self.out, self.recognizer, self.options, report_dir=self.report)
            for s in batch["source"]
        ]
        return {"result": np.array([json.dumps(asdict(r)) for r in results])}


def run_ray(
    sources: Sequence[str],
    out: Path,
    options: Options,
    workers: int,
    report_dir: Path | None,
    address: str | None,
) -> list[SourceResult]:
    """The Ray engine: Ray Data maps the sources over ``workers`` actors, one CPU each."""
    try:
        import ray
    except ModuleNotFoundError:
        raise EmoError("--engine ray needs Ray: pip install 'emo[ray]'") from None
    if not sources:
        return []
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            # ray job submit sets RAY_ADDRESS: joining a cluster takes no num_cpus
            num_cpus=workers if not address and not os.environ.get("RAY_ADDRESS") else None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # emo prints what was done
        ds = ray.data.from_items([{"source": s} for s in sources], override_num_blocks=max(1, len(sources)))
        done = ds.map_batches(
            RayAnalyzer,
            fn_constructor_args=(options, str(out), str(report_dir) if report_dir else None),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(sources)))),
            num_cpus=1,
        )
        return [SourceResult(**json.loads(row["result"])) for row in done.iter_rows()]
    finally:
        if started:
            ray.shutdown()


@dataclass
class Run:
    """A whole ``emo analyze`` run: what it read, what it wrote, how long it took."""

    out: Path
    results: list[SourceResult] = field(default_factory=list)
    skipped: int = 0
    #: Sources skipped as finished whose earlier run put them in failures/ (redo: --overwrite).
    earlier_failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[SourceResult]:
        return [r for r in self.results if r.error]


def analyze(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model: str = "default",
    tta: str | None = "none",
    detector: str | None = None,
    every: int | None = None,
    fps: float = DEFAULT_FPS,
    batch_size: int = 16,
    detect_size: int = DETECT_SIZE,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
    backend: str = "auto",
    overwrite: bool = False,
    report: bool = False,
    progress: bool = False,
) -> Run:
    """Analyse ``sources`` (videos, photos, folders, globs, lists) into Parquet tables under
    ``out``; returns what was done. Sources finished by an earlier run into the same ``out`` with
    the same options are skipped (``overwrite=True`` starts afresh).

    Raises:
        EmoError: a bad option, ``out``, model or engine (before any work).
    """
    _pyarrow()
    options = Options(
        model=str(model),
        backend=backend,
        tta=tta,
        detector=detector,
        every=every,
        fps=fps,
        batch_size=batch_size,
        detect_size=detect_size,
    )
    options.check()
    if engine not in ("local", "ray"):
        raise EmoError(f"--engine {engine}: use local or ray")
    if workers < 1:
        raise EmoError(f"--workers {workers}: give 1 or more")
    if detector is not None and detector not in DETECTORS:
        raise EmoError(f"--detector {detector}: use one of {', '.join(DETECTORS)}")
    check_model(options.model)
    out = Path(out)
    check_out(out, overwrite)
    listed = expand_sources([str(s) for s in sources])
    if not listed:
        raise EmoError("no sources: give video or image files, folders, globs or a list file")
    run_json = out / "run.json"
    record = {**asdict(options), "resolved_model": model_record(options)["model"]}
    if run_json.is_file():
        earlier = json.loads(run_json.read_text()).get("options", {})
        if earlier and earlier != record:
            changed = ", ".join(k for k in record if earlier.get(k) != record[k])
            raise EmoError(
                f"{out} holds a run with other options ({changed}): add --overwrite, or choose another --out"
            )
    done = finished(out)
    todo = [s for s in listed if source_key(s) not in done]
    report_dir = out / "report" if report else None
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    _write_json(run_json, {"options": record, "started": started.isoformat(), "finished": None})
    if engine == "local":
        results = run_local(todo, out, options, workers, report_dir, progress)
    else:
        results = run_ray(todo, out, options, workers, report_dir, address)
    run = Run(out, results, skipped=len(listed) - len(todo))
    run.earlier_failures = sorted(
        s for s in listed if s not in todo and (out / "failures" / f"{source_key(s)}.parquet").is_file()
    )
    ended = datetime.now(timezone.utc)
    _write_json(
        run_json,
        {
            **model_record(options),
            "emo_version": emo.__version__,
            "options": record,
            "engine": engine,
            "workers": workers,
            "started": started.isoformat(),
            "finished": ended.isoformat(),
            "wall_s": round((ended - started).total_seconds(), 3),
            "sources": len(listed),
            "analysed": len(results),
            "skipped_as_finished": run.skipped,
            "failed": len(run.failed),
            "frames": sum(r.frames for r in results),
            "rows": sum(r.rows for r in results),
        },
    )
    return run


def _write_json(path: Path, data: dict) -> None:
    write_bytes(path, (json.dumps(data, indent=2) + "\n").encode(), "run.json")


def read_table(out: str | os.PathLike, table: str = "faces"):
    """One of a run's tables as a pyarrow Table (``.to_pandas()`` for pandas)."""
    _, pq = _pyarrow()
    path = Path(out) / table
    files = sorted(path.glob("*.parquet"))
    if not files:
        return None
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog("emo-analyze"), description=" ".join(__doc__.split("\n\n")[0].split())
    )
    p.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="videos, photos, folders, globs, list files, URLs"
    )
    p.add_argument("--out", required=True, help="output folder (faces/, summary/, failures/, run.json)")
    p.add_argument(
        "--model", default="default", help="bundled name or purpose (default), or an .onnx/.ckpt file"
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference runtime (default auto)")
    p.add_argument(
        "--tta", choices=TTA_MODES, default="none", help="test-time augmentation (default none, for speed)"
    )
    p.add_argument("--detector", choices=list(DETECTORS), default=None, help="face detector (default yunet)")
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument(
        "--fps",
        type=float,
        default=DEFAULT_FPS,
        help=f"frames a second of video to analyse (default {DEFAULT_FPS:g})",
    )
    sampling.add_argument("--every", type=int, default=None, help="analyse every Nth frame instead")
    p.add_argument("--batch-size", type=int, default=16, help="frames classified together (default 16)")
    p.add_argument(
        "--detect-size",
        type=int,
        default=DETECT_SIZE,
        help=f"side, in px, frames are searched for faces at (default {DETECT_SIZE}; 640 for small faces)",
    )
    p.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="local process pool (default) or Ray"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto or ray://host:10001 (default: start a local one)",
    )
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument(
        "--report",
        action="store_true",
        help="also write each video's timeline plot and summary (out/report/)",
    )
    return p.parse_args(argv)


@exit_on_emo_error
def main(argv: Sequence[str] | None = None) -> int:
    """``emo analyze``: exit 0 when every source was read, 1 when some failed (see failures/)."""
    args = parse_args(argv)
    # FFmpeg's own messages about a corrupt file ("moov atom not found") would interleave with the
    # progress bar; each such source gets one line of its own in failures/.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    run = analyze(
        args.sources,
        args.out,
        model=args.model,
        tta=args.tta,
        detector=args.detector,
        every=args.every,
        fps=args.fps,
        batch_size=args.batch_size,
        detect_size=args.detect_size,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        backend=args.backend,
        overwrite=args.overwrite,
        report=args.report,
        progress=sys.stderr.isatty(),
    )
    frames = sum(r.frames for r in run.results)
    print(
        f"analysed {len(run.results)} source(s), {frames} frame(s), {sum(r.rows for r in run.results)} row(s) "
        f"into {run.out} ({run.skipped} already finished, {len(run.failed)} failed)",
        file=sys.stderr,
    )
    for r in run.results:
        if r.warning:
            print(f"warning: {r.warning}", file=sys.stderr)
    for r in run.failed:
        print(f"error: {r.error}", file=sys.stderr)
    if run.earlier_failures:
        print(
            f"{len(run.earlier_failures)} source(s) failed in an earlier run into {run.out} (failures/): "
            "--overwrite to try them again",
            file=sys.stderr,
        )
    return 1 if run.failed or run.earlier_failures else 0


if __name__ == "__main__":
    sys.exit(main())
