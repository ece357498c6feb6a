"""emo analyze: sampled frames a second and video-seconds a wall-second on a generated archive, for
the local engine with 1 and 2 workers, Ray with 1 and 2, and the ``fer`` package's ``Video`` API on
the same files; or, with ``--memory``, the peak RSS of one worker on one long 720p video.

    python benchmarks/analyze.py [--videos 20] [--seconds 30] [--fer-python fervenv/bin/python]
    python benchmarks/analyze.py --memory [--minutes 60] [--video long.mp4]

The archive: ``--videos`` MP4s of ``--seconds`` each, 640x480 at 30 FPS, with 1, 2 or 3 of the
bundled sample faces (``emo.samples``) gliding in lanes of their own, written frame by frame (a
30 s clip held in memory would be 830 MB). emo analyses it with its defaults (the default model,
no TTA, ``--fps 5``: every 6th frame); each run writes into a fresh ``--out``. Ray runs in this
process on ``ray.init(num_cpus=2)``, started once for both of its rows. ``fer`` runs in a Python
that has it (``--fer-python``, or this one if it imports ``fer``; see benchmarks/fer_baseline.py
for the install): ``fer.classes.Video.analyze`` with ``frequency`` set to emo's frame step, its
default detector and model, nothing saved, annotated or displayed. Every row's wall time includes
its start (worker processes, model loads); ``frames/s`` counts the sampled frames analysed.

``--memory`` writes the long video frame by frame (2 faces; at 30 FPS an hour is 108,000 frames,
written in tens of minutes: ``--video PATH`` keeps it there for the next run, which reuses it),
runs ``python -m emo analyze VIDEO --workers 1`` in a subprocess and reports its peak RSS
(``getrusage(RUSAGE_CHILDREN)``) and its RSS sampled through the run.

The bars: local 2 workers >= 1.7x local 1 worker; Ray 2 workers within 25% of local 2 workers;
emo per worker (local, 1 worker) >= 3x fer's frames a second; one worker's peak RSS on the long
video <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

# Only the standard library, numpy and OpenCV above: the same file runs fer's side (--fer-run) in
# a Python that has fer but not emo.
HERE = Path(__file__).resolve().parent
SIZE = (640, 480)
VIDEO_FPS = 30.0
MEMORY_SIZE = (1280, 720)
BARS = {"scale": 1.7, "ray": 0.25, "fer": 3.0, "rss_gb": 1.5}


# ----------------------------------------------------------------------------- the archive
class Scene:
    """``k`` sample faces, each in a lane of its own (1/k of the width), moving on a slow ellipse
    and breathing +-10% in size (as ``emo.samples.moving_face_frames``), drawn one frame at a time."""

    def __init__(self, k: int, size: tuple[int, int], period: int, phase: float = 0.0):
        from emo.samples import sample_path

        astronaut = cv2.imread(str(sample_path("astronaut")), cv2.IMREAD_COLOR)
        camera = cv2.imread(str(sample_path("camera")), cv2.IMREAD_COLOR)
        faces = [astronaut, camera, cv2.flip(astronaut, 1)]
        self.faces = [faces[j % len(faces)] for j in range(k)]
        self.k, self.size, self.period, self.phase = k, size, period, phase
        self.background = np.full((size[1], size[0], 3), 96, np.uint8)
        self.tiles: dict[tuple[int, int], np.ndarray] = {}  # sizes in steps of 8 px: a few dozen

    def tile(self, j: int, s: int) -> np.ndarray:
        if (j, s) not in self.tiles:
            self.tiles[j, s] = cv2.resize(self.faces[j], (s, s), interpolation=cv2.INTER_AREA)
        return self.tiles[j, s]

    def frame(self, i: int) -> np.ndarray:
        width, height = self.size
        lane = width / self.k
        side = int(min(0.8 * lane, 0.7 * height))
        frame = self.background.copy()
        for j in range(self.k):
            t = 2 * np.pi * i / self.period + self.phase + j
            s = 8 * int(side * (1 + 0.1 * np.sin(2 * t)) / 8)
            cx = (j + 0.5) * lane + 0.25 * (lane - s) * np.cos(t)
            cy = height / 2 + 0.25 * (height - s) * np.sin(t)
            x = int(np.clip(cx - s / 2, 0, width - s))
            y = int(np.clip(cy - s / 2, 0, height - s))
            frame[y : y + s, x : x + s] = self.tile(j, s)
        return frame


def write_scene(path: Path, scene: Scene, frames: int, fps: float = VIDEO_FPS, every: int = 0) -> Path:
    """``frames`` frames of ``scene`` into an MP4, one at a time (memory stays one frame)."""
    from emo.inference.video import open_writer

    writer = open_writer(path, fps, (scene.size[1], scene.size[0], 3))
    try:
        for i in range(frames):
            writer.write(scene.frame(i))
            if every and (i + 1) % every == 0:
                print(f"  {path.name}: {(i + 1) / fps / 60:.0f} of {frames / fps / 60:.0f} min", flush=True)
    except BaseException:
        writer.abort()
        raise
    writer.release()
    return path


def make_archive(folder: Path, videos: int, seconds: float) -> list[dict]:
    """``videos`` clips of 1-3 faces: ``[{path, faces, frames}]``."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * VIDEO_FPS))
    made = []
    for i in range(videos):
        k = 1 + i % 3
        scene = Scene(k, SIZE, period=int(10 * VIDEO_FPS), phase=0.7 * i)
        path = write_scene(folder / f"session_{i:03d}.mp4", scene, frames)
        made.append({"path": str(path), "faces": k, "frames": frames})
    return made


# ----------------------------------------------------------------------------- the runs
def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the local pool's workers, fer)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def emo_run(archive: Path, out: Path, engine: str, workers: int, fps: float) -> dict:
    from emo.inference.analyze import analyze, read_table

    cpu, t0 = cpu_seconds(), time.perf_counter()
    run = analyze([archive], out, engine=engine, workers=workers, fps=fps)
    wall = time.perf_counter() - t0
    faces = read_table(out, "faces").select(["source", "face_id", "label"]).to_pandas()
    found = faces.dropna(subset=["label"])
    return {
        "wall_s": wall,
        "cpu_s": None if engine == "ray" else cpu_seconds() - cpu,  # Ray's workers are not our children
        "frames": sum(r.frames for r in run.results),
        "failed": len(run.failed),
        "rows": len(faces),
        "detections": len(found),
        "face_ids": int(found.groupby("source").face_id.nunique().sum()),
    }


def fer_python(given: str | None) -> str | None:
    """A Python that imports fer: ``given``, or this one when it has fer."""
    if given:
        return given
    try:
        import fer  # noqa: F401

        return sys.executable
    except ImportError:
        return None


def fer_run(python: str, videos: list[str], step: int) -> dict:
    """fer's side in ``python`` (a subprocess), timed from outside as emo's rows are."""
    command = [python, str(Path(__file__).resolve()), "--fer-run", str(step), *videos]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cpu, t0 = cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "cpu_s": cpu_seconds() - cpu, "failed": 0}


def fer_worker(step: int, videos: list[str]) -> None:
    """Run in fer's Python: ``Video.analyze`` on each video, every ``step``-th frame; one JSON line."""
    sys.path.insert(0, str(HERE))
    from fer_baseline import tensorflow_stand_in

    tensorflow_stand_in()
    # Video.analyze calls cv2.waitKey(1) after every frame (to stop on "q" when displaying);
    # headless OpenCV, the kind a batch machine has, raises there. No key is ever pressed here.
    cv2.waitKey = lambda delay=0: -1
    import logging

    logging.getLogger("fer").setLevel(logging.WARNING)
    from fer.classes import Video
    from fer.fer import FER

    detector = FER()  # fer's defaults: Haar cascade, TFLite model
    seen = {"frames": 0, "detections": 0}
    detect = detector.detect_emotions

    def counted(img, *args, **kwargs):
        faces = detect(img, *args, **kwargs)
        seen["frames"] += 1
        seen["detections"] += len(faces)
        return faces

    detector.detect_emotions = counted
    with tempfile.TemporaryDirectory(prefix="emo-fer-") as tmp:
        for video in videos:
            Video(video, outdir=tmp).analyze(
                detector,
                display=False,
                output="pandas",
                frequency=step,
                save_frames=False,
                save_video=False,
                annotate_frames=False,
                zip_images=False,
            )
    import fer

    print(json.dumps({**seen, "fer_version": fer.__version__}))


# ----------------------------------------------------------------------------- the report
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} CPUs; {platform.python_implementation()} {platform.python_version()}"


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def verdict(ok: bool) -> str:
    return "[green]meets[/green]" if ok else "[red]misses[/red]"


def throughput(args: argparse.Namespace) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from emo.inference.analyze import Options

    console = Console(width=160)
    load_start = load()
    step = Options(fps=args.fps).step(VIDEO_FPS)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="emo-analyze-bench-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        made = make_archive(tmp / "archive", args.videos, args.seconds)
        print(
            f"archive: {len(made)} videos x {args.seconds:g} s in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        video_s = sum(m["frames"] for m in made) / VIDEO_FPS
        expected = sum(m["faces"] * math.ceil(m["frames"] / step) for m in made)
        ids = sum(m["faces"] for m in made)
        archive = tmp / "archive"

        def best(name: str, fn) -> None:
            print(f"{name} ...", flush=True)
            runs = [fn(i) for i in range(args.repeat)]
            rows[name] = min(runs, key=lambda r: r["wall_s"])

        best("local, 1 worker", lambda i: emo_run(archive, tmp / f"local1-{i}", "local", 1, args.fps))
        best("local, 2 workers", lambda i: emo_run(archive, tmp / f"local2-{i}", "local", 2, args.fps))
        notes = []
        try:
            import ray
        except ImportError:
            ray = None
            notes.append("no Ray rows: Ray is not installed (pip install 'emo[ray]')")
        if ray is not None:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                best("Ray, 1 worker", lambda i: emo_run(archive, tmp / f"ray1-{i}", "ray", 1, args.fps))
                best("Ray, 2 workers", lambda i: emo_run(archive, tmp / f"ray2-{i}", "ray", 2, args.fps))
            finally:
                ray.shutdown()
        python = fer_python(args.fer_python)
        if python is None:
            notes.append(
                "no fer row: fer is not importable here; give --fer-python (see benchmarks/fer_baseline.py)"
            )
        else:
            try:
                best("fer Video API", lambda i: fer_run(python, [m["path"] for m in made], step))
            except (RuntimeError, OSError, ValueError) as err:
                notes.append(f"no fer row: it failed ({err})")
    load_end = load()

    table = Table(box=box.MARKDOWN, title=None)
    for col in (
        "engine",
        "wall s",
        "frames/s",
        "video-s per wall-s",
        "frames per CPU-s",
        "faces found / present",
        "face ids (present)",
    ):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for name, r in rows.items():
        fps = r["frames"] / r["wall_s"]
        table.add_row(
            name + (" (fer " + r["fer_version"] + ")" if "fer_version" in r else ""),
            f"{r['wall_s']:.1f}",
            f"{fps:.1f}",
            f"{video_s / r['wall_s']:.1f}",
            f"{r['frames'] / r['cpu_s']:.1f}" if r.get("cpu_s") else "—",
            f"{r['detections']} / {expected}",
            f"{r['face_ids']} ({ids})" if "face_ids" in r else "—",
        )
        r["frames_per_s"], r["video_s_per_wall_s"] = fps, video_s / r["wall_s"]

    def rate(name: str) -> float | None:
        return rows[name]["frames_per_s"] if name in rows else None

    ratios = []
    one, two = rate("local, 1 worker"), rate("local, 2 workers")
    ratios.append(
        ("local 2 workers / local 1 worker", two / one, f">= {BARS['scale']}x", two / one >= BARS["scale"])
    )
    if rate("Ray, 2 workers"):
        r = rate("Ray, 2 workers") / two
        ratios.append(
            ("Ray 2 workers / local 2 workers", r, f"within {BARS['ray']:.0%}", abs(r - 1) <= BARS["ray"])
        )
    if rate("fer Video API"):
        r = one / rate("fer Video API")
        ratios.append(("emo per worker (local, 1) / fer", r, f">= {BARS['fer']}x", r >= BARS["fer"]))

    console.print()
    console.print(f"command: python {shlex.join(['benchmarks/analyze.py', *sys.argv[1:]])}")
    console.print(
        f"machine: {machine()}; load average {load_start:.2f} at the start, {load_end:.2f} at the end"
    )
    console.print(
        f"archive: {args.videos} videos x {args.seconds:g} s ({video_s:g} video-s), {SIZE[0]}x{SIZE[1]} at "
        f"{VIDEO_FPS:g} FPS, 1-3 faces; --fps {args.fps:g} (every {step}th frame); best of {args.repeat}"
    )
    console.print(table)
    ratio_table = Table(box=box.MARKDOWN)
    for col in ("ratio of frames/s", "measured", "bar", ""):
        ratio_table.add_column(col)
    for name, value, bar, ok in ratios:
        ratio_table.add_row(name, f"{value:.2f}x", bar, verdict(ok))
    console.print(ratio_table)
    for note in notes:
        console.print(f"note: {note}")
    failed = {k: r["failed"] for k, r in rows.items() if r["failed"]}
    if failed:
        console.print(f"[red]sources failed: {failed}[/red]")
    if args.json:
        record = {
            "command": sys.argv,
            "machine": machine(),
            "load": {"start": load_start, "end": load_end},
            "archive": {"videos": args.videos, "seconds": args.seconds, "step": step},
            "rows": rows,
            "ratios": {name: value for name, value, _, _ in ratios},
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        console.print(f"saved {args.json}")


# ----------------------------------------------------------------------------- memory
def rss_of(pid: int) -> int | None:
    """Resident bytes of ``pid`` now (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory(args: argparse.Namespace) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    load_start = load()
    frames = int(round(args.minutes * 60 * VIDEO_FPS))
    with tempfile.TemporaryDirectory(prefix="emo-analyze-memory-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        video = Path(args.video) if args.video else tmp / "long.mp4"
        written = None
        if not video.is_file():
            print(f"writing {args.minutes:g} min of {MEMORY_SIZE[0]}x{MEMORY_SIZE[1]} video ...", flush=True)
            t0 = time.perf_counter()
            scene = Scene(2, MEMORY_SIZE, period=int(20 * VIDEO_FPS))
            write_scene(video, scene, frames, every=int(10 * 60 * VIDEO_FPS))
            written = time.perf_counter() - t0
        generator_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux
        command = [
            sys.executable,
            "-m",
            "emo",
            "analyze",
            str(video),
            "--out",
            str(tmp / "out"),
            "--workers",
            "1",
        ]
        print(
            "analysing it:",
            shlex.join(["emo", "analyze", video.name, "--out", "out/", "--workers", "1"]),
            flush=True,
        )
        t0 = time.perf_counter()
        samples: list[tuple[float, int]] = []  # (s, RSS bytes): flat, or growing with the video?
        with open(tmp / "stderr.txt", "w+") as err:
            proc = subprocess.Popen(command, stderr=err)
            while proc.poll() is None:
                rss = rss_of(proc.pid)
                if rss:
                    samples.append((time.perf_counter() - t0, rss))
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            err.seek(0)
            stderr = err.read()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest waited-for child
        faces_mb = sum(p.stat().st_size for p in (tmp / "out" / "faces").glob("*.parquet")) / 1e6
        video_mb = video.stat().st_size / 1e6
        cap = cv2.VideoCapture(str(video))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        video_fps = cap.get(cv2.CAP_PROP_FPS)
        minutes = cap.get(cv2.CAP_PROP_FRAME_COUNT) / video_fps / 60
        cap.release()
        run = (
            json.loads((tmp / "out" / "run.json").read_text()) if (tmp / "out" / "run.json").is_file() else {}
        )
    load_end = load()

    def at(fraction: float) -> str:
        if not samples:
            return "—"
        t = fraction * samples[-1][0]
        return f"{next(rss for s, rss in samples if s >= t) / 1e9:.2f}"

    console.print()
    console.print(f"command: python {shlex.join(['benchmarks/analyze.py', *sys.argv[1:]])}")
    console.print(
        f"machine: {machine()}; load average {load_start:.2f} at the start, {load_end:.2f} at the end"
    )
    console.print(
        f"video: {minutes:.1f} min, {width}x{height} at {video_fps:g} FPS, {video_mb:.0f} MB; "
        + (
            f"written in {written:.0f} s, the generator's peak RSS {generator_rss / 1e9:.2f} GB"
            if written is not None
            else f"reused {args.video}"
        )
    )
    if proc.returncode:
        console.print(f"[red]emo analyze exited with {proc.returncode}[/red]: {stderr.strip()[-2000:]}")
    table = Table(box=box.MARKDOWN)
    for col in ("", "value", "bar", ""):
        table.add_column(col)
    table.add_row(
        "peak RSS of the worker, GB",
        f"{peak / 1e9:.2f}",
        f"<= {BARS['rss_gb']}",
        verdict(peak / 1e9 <= BARS["rss_gb"]),
    )
    table.add_row("RSS at 10% / 50% / 90% of the run, GB", f"{at(0.1)} / {at(0.5)} / {at(0.9)}", "", "")
    table.add_row("wall s", f"{wall:.0f}", "", "")
    table.add_row("sampled frames", str(run.get("frames", "—")), "", "")
    table.add_row("frames/s", f"{run['frames'] / wall:.1f}" if run.get("frames") else "—", "", "")
    table.add_row("faces/ rows, Parquet MB", f"{run.get('rows', '—')}, {faces_mb:.2f}", "", "")
    console.print(table)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": sys.argv,
                    "machine": machine(),
                    "load": {"start": load_start, "end": load_end},
                    "minutes": minutes,
                    "peak_rss_bytes": peak,
                    "rss_samples": samples,
                    "wall_s": wall,
                    "run": run,
                },
                indent=2,
            )
            + "\n"
        )
        console.print(f"saved {args.json}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--fer-run":  # fer's side, in fer's Python
        fer_worker(int(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=20, help="videos in the archive (default: 20)")
    parser.add_argument("--seconds", type=float, default=30, help="length of each video (default: 30)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames a second analysed (emo's default: 5)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, fastest kept (default: 1)")
    parser.add_argument("--fer-python", default=os.environ.get("EMO_FER_PYTHON"), help="a Python with fer")
    parser.add_argument("--memory", action="store_true", help="peak RSS of one worker on one long 720p video")
    parser.add_argument(
        "--minutes", type=float, default=60, help="--memory: the video's length (default: 60)"
    )
    parser.add_argument(
        "--video",
        default=None,
        help="--memory: the long video; written there (and kept) if missing, else reused",
    )
    parser.add_argument(
        "--dir", default=None, help="where the temporary archive goes (default: the system's)"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also save the results as JSON")
    args = parser.parse_args()
    if args.memory:
        memory(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
