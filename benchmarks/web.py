"""The on-device page's speed: end-to-end FPS of YuNet and an emo model in a real browser
(onnxruntime-web, WebAssembly, one thread), beside the Python runtime on the same frames.

    python benchmarks/web.py [--models vgg_s_people cnn3] [--seconds 15] [--warmup 3] [--json out.json]

The page (``emo export-web``, served from a temporary folder by ``http.server`` on 127.0.0.1) runs
in headless chromium (the system's: ``apt-get install chromium``, or ``EMO_CHROMIUM=/path``; driven
by Playwright for Python, whose own browser download is not needed). Its fake camera plays a
640x480, 30 FPS clip of one sample face (~150 px) gliding (``emo.samples.moving_face_frames``), in a
loop. For each model (default: the page's models, its default first) the page switches to it,
starts the camera, warms up ``--warmup`` s, and reads its counters (``window.emo.stats``) before
and after ``--seconds`` s:

* browser FPS: camera frames processed a second, end to end (grab, grey, detect or track,
  classify, smooth, draw); the fake camera delivers 30 a second, so it cannot exceed ~30;
* browser ms/frame: the page's own time per frame (grab, detect, classify, smooth, draw the box and
  list the scores), whatever the camera's rate;
* browser model ms/face: the classifier's network run (``session.run``) per face classified.

Then, with the browser closed, the Python runtime (``emo.inference.realtime.load_model``, one
thread, the same model file) on the same frames, in a loop for as many frames as the browser
processed: frames/s of the real-time loop (grey, ``FaceTracker`` every 5th frame,
``predict_faces``, ``Smoother(0.8)``), no camera and no drawing; and per-face model ms, the median
of ``probs([crop], "none")`` on one ~150 px crop (preprocessing + network + softmax; the network
alone is reported beside it). The bar: the page >= 15 FPS end to end at 640x480 with one face.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from realtime import median_ms  # benchmarks/realtime.py: the same timer as the real-time table

SIZE = (640, 480)
CAMERA_FPS = 30
BAR_FPS = 15.0
FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
STATS = "() => ({...window.emo.stats, sum: {...window.emo.stats.sum}, now: performance.now()})"
# The page's error, if it shows one: #status with the "error" class.
PAGE_ERROR = """() => { const s = document.getElementById("status");
  return s && s.classList.contains("error") ? s.textContent : null; }"""


class PageError(RuntimeError):
    """The page showed an error or threw one."""


# ------------------------------------------------------------------------------- the site
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that logs nothing and knows the page's file types."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".webmanifest": "application/manifest+json",
        ".onnx": "application/octet-stream",
    }

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """``directory`` served on 127.0.0.1 (a free port) from a daemon thread: the server and its URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# ---------------------------------------------------------------------------- the browser
async def check_page(page, errors: list[str]) -> None:
    shown = await page.evaluate(PAGE_ERROR)
    if shown:
        raise PageError(f"the page shows an error: {shown}")
    if errors:
        raise PageError(f"the page threw: {errors[0]}")


async def browser_rows(
    chromium: str, clip: Path, url: str, models: list[str] | None, warmup: float, seconds: float
) -> tuple[str, list[dict]]:
    """Chromium's version and one measurement per model (all of the page's when ``models`` is None)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[*FLAGS, f"--use-file-for-fake-video-capture={clip}"],
        )
        try:
            version = browser.version
            page = await browser.new_page(viewport={"width": 1000, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e).splitlines()[0]))
            await page.goto(url)
            await page.wait_for_function("() => window.emo !== undefined", timeout=30_000)
            try:
                await page.evaluate("async () => { await window.emo.ready; }")
            except Exception:  # the page's own message says why (#status), else the exception
                await check_page(page, errors)
                raise
            await check_page(page, errors)
            config = await page.evaluate("() => window.emo.config.models")
            names = [m["name"] for m in config]
            purposes = {m["purpose"]: m["name"] for m in config}
            chosen = [purposes.get(m, m) for m in models] if models else names
            unknown = [m for m in chosen if m not in names]
            if unknown:
                raise PageError(f"the page has no model {', '.join(unknown)}: it offers {', '.join(names)}")
            rows = []
            for name in chosen:
                print(f"browser: {name} ...", flush=True)
                await page.evaluate("name => window.emo.chooseModel(name)", name)
                await check_page(page, errors)
                loaded = await page.evaluate("() => window.emo.pipeline.classifier.meta")
                if loaded["name"] != name:
                    raise PageError(f"the page runs {loaded['name']}, not {name}")
                await page.evaluate("() => window.emo.startCamera()")
                await check_page(page, errors)
                await asyncio.sleep(warmup)
                before = await page.evaluate(STATS)
                await asyncio.sleep(seconds)
                after = await page.evaluate(STATS)
                await page.evaluate("() => window.emo.stopCamera()")
                await check_page(page, errors)
                frames = after["frames"] - before["frames"]
                faces = after["sum"]["faces"] - before["sum"]["faces"]
                if after["frames"] < before["frames"] or frames <= 0:
                    raise PageError(f"{name}: the page processed no camera frame in {seconds:g} s")
                if faces <= 0:
                    raise PageError(f"{name}: the page found no face in {frames} camera frames")
                wall = (after["now"] - before["now"]) / 1e3
                rows.append(
                    {
                        "model": name,
                        "file": loaded["file"],
                        "frames": frames,
                        "wall_s": wall,
                        "fps": frames / wall,
                        "ms_per_frame": (after["sum"]["frameMs"] - before["sum"]["frameMs"]) / frames,
                        "faces_per_frame": faces / frames,
                        "model_ms_per_face": (after["sum"]["faceMs"] - before["sum"]["faceMs"]) / faces,
                        "detect_ms_last": after["detectMs"],
                    }
                )
        finally:
            await browser.close()
    return version, rows


# ----------------------------------------------------------------------------- the Python side
def python_row(name: str, frames: list[np.ndarray], n_frames: int, repeat: int) -> dict:
    """The real-time loop's frames/s over ``n_frames`` frames (``frames`` in a loop), and the
    per-face model time on one crop of the first frame."""
    from emo.inference.detect import crop_faces
    from emo.inference.realtime import load_model, predict_faces
    from emo.inference.video import FaceTracker, Smoother

    model = load_model(name, threads=1)
    tracker, smoother = FaceTracker(model.detector, 5), Smoother(0.8)

    def loop(count: int) -> int:
        found = 0
        for i in range(count):
            grey = cv2.cvtColor(frames[i % len(frames)], cv2.COLOR_BGR2GRAY)
            found += len(smoother(predict_faces(model, grey, tracker(grey))))
        return found

    loop(min(30, len(frames)))  # sessions and caches warm, as the browser's --warmup
    t0 = time.perf_counter()
    faces = loop(n_frames)
    wall = time.perf_counter() - t0
    grey = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    boxes = model.detector(grey)[:1]
    if not len(boxes):
        raise RuntimeError(f"{name}: Python found no face in the clip's first frame")
    crop = crop_faces(grey, boxes)[0]
    x = model.face_input([crop])
    return {
        "model": name,
        "backend": model.backend.name,
        "frames": n_frames,
        "wall_s": wall,
        "fps": n_frames / wall,
        "faces_per_frame": faces / n_frames,
        "crop_px": int(crop.shape[0]),
        "model_ms_per_face": median_ms(lambda: model.probs([crop], "none"), repeat),
        "network_ms_per_face": median_ms(lambda: model.backend(x), repeat),
    }


# ------------------------------------------------------------------------------- the report
def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fail(message: str) -> None:
    sys.exit(f"benchmarks/web.py: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="models (names or purposes) to run; default: the page's (default and fast), default first",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="measured seconds per model (default: 15)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default: 3)")
    parser.add_argument("--frames", type=int, default=150, help="frames in the camera clip (default: 150)")
    parser.add_argument(
        "--repeat", type=int, default=200, help="per-face model runs in Python (default: 200)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args()

    chromium = os.environ.get("EMO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        fail("no chromium: apt-get install chromium, or set EMO_CHROMIUM=/path/to/chromium")
    if not Path(chromium).is_file():
        fail(f"EMO_CHROMIUM={chromium} is not a file: apt-get install chromium, or point it at one")
    try:
        from playwright.async_api import Error as PlaywrightError
    except ImportError:
        fail("Playwright for Python is missing: pip install playwright (its browser download is not needed)")

    from emo.errors import EmoError
    from emo.inference.webapp import WEB_MODELS, export_web
    from emo.samples import moving_face_frames, write_y4m

    frames = moving_face_frames(args.frames, size=SIZE)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="emo-web-bench-") as tmp:
        tmp = Path(tmp)
        clip = write_y4m(tmp / "face.y4m", frames, fps=CAMERA_FPS)
        site_models = list(WEB_MODELS) + [m for m in args.models or () if m not in WEB_MODELS]
        try:
            site = export_web(tmp / "site", site_models)
        except EmoError as err:
            fail(str(err))
        server, url = serve(site)
        try:
            version, browser = asyncio.run(
                browser_rows(chromium, clip, url, args.models, args.warmup, args.seconds)
            )
        except PageError as err:
            fail(str(err))
        except PlaywrightError as err:  # the browser did not start, or the page did not answer
            fail(f"chromium ({chromium}): {str(err).strip().splitlines()[0]}")
        finally:
            server.shutdown()
            server.server_close()
    python = {}
    for row in browser:
        print(f"python: {row['model']} ...", flush=True)
        python[row["model"]] = python_row(row["model"], frames, max(row["frames"], len(frames)), args.repeat)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print()
    print(f"command: python {shlex.join(['benchmarks/web.py', *sys.argv[1:]])}")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs; chromium {version} (headless, onnxruntime-web "
        f"WebAssembly SIMD, 1 thread); {platform.python_implementation()} {platform.python_version()}, "
        f"onnxruntime 1 thread; load average {load_start:.2f} at the start, {load_end:.2f} at the end"
    )
    print(
        f"clip: {SIZE[0]}x{SIZE[1]}, {CAMERA_FPS} FPS fake camera, one face (~150 px), {args.frames} frames "
        f"looped; warm-up {args.warmup:g} s, measured {args.seconds:g} s per model"
    )
    print()
    print(
        f"| model | browser FPS (end to end, {SIZE[0]}x{SIZE[1]}, 1 face) | browser ms/frame "
        "| browser model ms/face | Python runtime frames/s | Python model ms/face "
        "| browser/Python model time ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for b in browser:
        py = python[b["model"]]
        print(
            f"| {b['model']} ({b['file'].split('/')[-1]}) | {b['fps']:.1f} | {b['ms_per_frame']:.1f} "
            f"| {b['model_ms_per_face']:.2f} | {py['fps']:.0f} | {py['model_ms_per_face']:.2f} "
            f"| {b['model_ms_per_face'] / py['model_ms_per_face']:.1f}x |"
        )
    print()
    print(
        f"The fake camera delivers {CAMERA_FPS} frames/s, so browser FPS cannot exceed ~{CAMERA_FPS}; "
        f"the bar is >= {BAR_FPS:g} FPS end to end. Browser ms/frame is the page's work alone, "
        f"drawing included (1000/ms is the rate it could keep with a faster camera)."
    )
    for b in browser:
        py = python[b["model"]]
        verdict = "meets" if b["fps"] >= BAR_FPS else "MISSES"
        print(
            f"- {b['model']}: {b['fps']:.1f} FPS {verdict} the bar; faces per frame: browser "
            f"{b['faces_per_frame']:.2f}, Python {py['faces_per_frame']:.2f}; Python network alone "
            f"{py['network_ms_per_face']:.2f} ms/face (the browser's model ms times session.run only: "
            f"ratio to it {b['model_ms_per_face'] / py['network_ms_per_face']:.1f}x)"
        )
    if args.json:
        record = {
            "command": sys.argv,
            "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "chromium": version},
            "load": {"start": load_start, "end": load_end},
            "clip": {"size": list(SIZE), "fps": CAMERA_FPS, "frames": args.frames},
            "warmup_s": args.warmup,
            "seconds": args.seconds,
            "bar_fps": BAR_FPS,
            "rows": [{"browser": b, "python": python[b["model"]]} for b in browser],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
