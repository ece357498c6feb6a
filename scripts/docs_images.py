"""The pictures of the documentation site (docs/images/), made by emo's own commands.

    python scripts/docs_images.py                                # all of them
    python scripts/docs_images.py --only window,web-app          # some of them
    python scripts/docs_images.py --data-dir data/fer2013        # where FER-2013 is (confusion.png)

Each picture is what a user gets from a command, on the bundled samples, so nobody pastes
screenshots by hand:

* ``window.png``: ``emo realtime --source sample.mp4`` (the sample video ``emo demo`` writes) in
  its window on a virtual X server (Xvfb 1280x800), grabbed with imagemagick's ``import`` once it
  shows labelled faces, and cropped to the window.
* ``web-app.png``, ``web-app-phone.png``: the live page of ``emo serve`` in headless chromium,
  driven by Playwright, at 1280x800 and on a 390x844 touch screen; chromium's fake camera plays
  a clip of the two sample faces (a YUV4MPEG2 file written here).
* ``timeline.png``: the timeline of ``emo predict sample.mp4 --report DIR``.
* ``confusion.png``: ``emo evaluate`` of the default model (its recorded TTA) on FER-2013
  PrivateTest. Where FER-2013 is not found (``--data-dir``, else ``$EMO_DATA_DIR``, else
  data/fer2013) this one is skipped with a one-line note.

Needs, per picture: Xvfb, imagemagick, xdotool and tkinter for the window (Debian: ``apt-get
install xvfb imagemagick xdotool python3-tk``); chromium (``apt-get install chromium``, or
``EMO_CHROMIUM=/path/to/chromium``), Playwright for Python (its own browser download is not
needed) and ``emo[serve]`` for the page; ``emo[train]`` for the confusion matrix. A missing one
stops the script, in one line that names it, before anything runs.

One line per picture written (path and size). Each PNG is kept under 250 KB (``MAX_BYTES``): a
full-colour file that is larger is reduced to 256 colours, then scaled down if need be. Every process started here (Xvfb,
the window, the server, the browser) is stopped on the way out, on errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from emo import weights
from emo.errors import EmoError
from emo.inference.draw import COLOURS
from emo.samples import sample_path, sample_video, write_y4m

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ("window", "web-app", "timeline", "confusion")
OUT_DIR = ROOT / "docs" / "images"
MAX_BYTES = 250_000
SCREEN = (1280, 800)
#: Frames of the window's video: emo realtime reads a file as fast as it can, so the video must
#: outlast the wait for a settled, labelled frame (about 10 s at 100 FPS).
WINDOW_FRAMES = 1200
#: The page's two views: desktop and a phone (touch, device pixels at twice the CSS pixels).
PAGE_VIEWS = {
    "web-app.png": {"viewport": {"width": 1280, "height": 800}},
    "web-app-phone.png": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    },
}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


class Failed(Exception):
    """A step that did not work: its one-line reason."""


# ------------------------------------------------------------------------------- tools and data
def chromium() -> str | None:
    return os.environ.get("EMO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def has_data(data_dir: str) -> bool:
    """Whether ``data_dir`` holds FER-2013 (in a layout emo reads)."""
    try:
        from emo.data.fer2013 import find_source
    except ImportError:  # no training extra: missing() says so where the folder is there
        return Path(data_dir).exists()
    try:
        find_source(data_dir)
    except EmoError:
        return False
    return True


def missing(images: list[str]) -> list[str]:
    """What the chosen pictures need and this machine lacks, each with its fix."""
    out = []
    if "window" in images:
        for tool, package in (("Xvfb", "xvfb"), ("import", "imagemagick"), ("xdotool", "xdotool")):
            if shutil.which(tool) is None:
                out.append(f"{tool} (apt-get install {package})")
        if find_spec("tkinter") is None:
            out.append("tkinter (apt-get install python3-tk)")
    if "web-app" in images:
        if chromium() is None:
            out.append("chromium (apt-get install chromium, or EMO_CHROMIUM=/path/to/chromium)")
        if find_spec("playwright") is None:
            out.append("playwright (pip install playwright; its browser download is not needed)")
        if find_spec("fastapi") is None or find_spec("uvicorn") is None:
            out.append("emo serve's extra (pip install 'emo[serve]')")
    if "confusion" in images and (find_spec("torch") is None or find_spec("lightning") is None):
        out.append("emo's training extra for emo evaluate (pip install 'emo[train]')")
    return out


# ------------------------------------------------------------------------------------ processes
def emo_command(*args: str) -> list[str]:
    """``emo ARGS`` run by this Python, from the checkout."""
    return [sys.executable, "-m", "emo", *args]


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def started(cmd: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    """``cmd`` running in the background (output to ``log``), stopped on the way out."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


def run(cmd: list[str], log: Path, what: str, timeout: float = 900, **kwargs) -> None:
    """Run ``cmd`` to the end (output to ``log``); Failed, with its last lines, if it fails."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"{what} took over {timeout:.0f} s") from None
    finally:
        stop(proc)
    if rc != 0:
        raise Failed(f"{what} failed (exit {rc}):\n{tail(log)}")


@contextmanager
def xvfb(size: tuple[int, int] = SCREEN) -> Iterator[str]:
    """A virtual X server on a free display number (``-displayfd``): its DISPLAY name."""
    read, write = os.pipe()
    cmd = ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{size[0]}x{size[1]}x24"]
    proc = subprocess.Popen(
        [*cmd, "-dpi", "96", "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL
    )
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()  # empty if Xvfb exits without a display
        if not number:
            raise Failed("Xvfb did not start")
        yield f":{number}"
    finally:
        stop(proc)


def x11(display: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=60, check=check
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------- PNGs
def write_png(image: Image.Image, path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Write ``image`` as an optimised PNG of at most ``max_bytes``: full colour where that fits,
    else 256 colours (dithered: photos keep their gradients), scaled down if still too large.
    Returns the file's size."""
    image = image.convert("RGB")

    def encode(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, "PNG", optimize=True)
        return buf.getvalue()

    data = encode(image)
    scale = 1.0
    while len(data) > max_bytes and scale > 0.3:
        shown = (
            image if scale == 1 else image.resize((round(image.width * scale), round(image.height * scale)))
        )
        palette = shown.quantize(256, method=Image.Quantize.FASTOCTREE)  # keeps the small bars' colours
        data = encode(shown.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))
        scale *= 0.85
    path.write_bytes(data)
    return len(data)


def from_bgr(frame: np.ndarray) -> Image.Image:
    return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def two_faces_frames(n_frames: int = 90, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """BGR frames of the two sample faces, each swaying gently (a loop): the astronaut top left,
    the camera operator bottom right, so that each face's probability bars have room."""
    width, height = size
    side = 290
    faces = [
        cv2.resize(cv2.imread(str(sample_path(name))), (side, side), interpolation=cv2.INTER_AREA)
        for name in ("astronaut", "camera")
    ]
    frames = []
    for i in range(n_frames):
        t = 2 * np.pi * i / n_frames
        frame = np.full((height, width, 3), 96, np.uint8)
        for k, face in enumerate(faces):
            x = round(12 + k * (width - side - 24) + 6 * np.sin(t + k))
            y = round(6 + k * (height - side - 12) + 6 * np.cos(t + 2 * k))
            frame[y : y + side, x : x + side] = face
        frames.append(frame)
    return frames


# -------------------------------------------------------------------------------------- pictures
def window_png(tmp: Path, out: Path) -> list[Path]:
    """emo realtime's window on the sample video, grabbed from a virtual X server."""
    video = sample_video(tmp / "sample.mp4", n_frames=WINDOW_FRAMES)
    log = tmp / "realtime.log"
    with (
        xvfb() as display,
        started(
            emo_command("realtime", "--source", str(video)), log, env=child_env(DISPLAY=display), cwd=tmp
        ) as proc,
    ):
        wid = wait_for_window(display, proc, log)
        shot = wait_for_labels(display, proc, wid, tmp)
        # q, as a user quits (to the focused window; emo realtime then closes its outputs)
        x11(display, "xdotool", "windowfocus", "--sync", wid, check=False)
        x11(display, "xdotool", "key", "q", check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass  # stopped by started()
    path = out / "window.png"
    write_png(from_bgr(shot), path)
    return [path]


def wait_for_window(display: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    """The X id of emo realtime's window (titled ``emo - MODEL``) once it is on screen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"emo realtime exited ({proc.returncode}) before its window showed:\n{tail(log)}")
        found = x11(display, "xdotool", "search", "--onlyvisible", "--name", "^emo - ", check=False)
        if found.returncode == 0 and found.stdout.split():
            return found.stdout.split()[0]
        time.sleep(0.2)
    raise Failed(f"emo realtime's window did not show in {timeout:.0f} s:\n{tail(log)}")


def wait_for_labels(
    display: str, proc: subprocess.Popen, wid: str, tmp: Path, settle: float = 3, timeout: float = 60
) -> np.ndarray:
    """The window's pixels (BGR), grabbed from the screen once labelled faces have shown for
    ``settle`` seconds (the smoothed probabilities and the FPS counter have settled by then)."""
    geometry = dict(
        line.split("=", 1)
        for line in x11(display, "xdotool", "getwindowgeometry", "--shell", wid).stdout.split()
    )
    x, y, w, h = (int(geometry[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    colours = np.array([c for name, c in COLOURS.items() if name != "neutral"])  # neutral is grey
    grab = tmp / "screen.png"
    first_seen = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed("emo realtime's window closed before a labelled face was grabbed")
        x11(display, "import", "-window", "root", str(grab))
        window = cv2.imread(str(grab))[y : y + h, x : x + w]
        near = np.abs(window[:, :, None, :].astype(int) - colours[None, None]).max(axis=3) < 12
        if near.any(axis=2).sum() > 1000:  # a label's box, tab and bar
            first_seen = first_seen or time.monotonic()
            if time.monotonic() - first_seen >= settle:
                return window
        time.sleep(0.5)
    raise Failed(f"emo realtime's window showed no labelled face in {timeout:.0f} s")


def web_app_png(tmp: Path, out: Path) -> list[Path]:
    """emo serve's pages in headless chromium, its fake camera playing the two sample faces: the
    on-device page (``/``) on a desktop and a phone, and the server-side page (``/server``)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    frames = two_faces_frames()
    clip = write_y4m(tmp / "faces.y4m", frames)
    port, log = free_port(), tmp / "serve.log"
    url = f"http://127.0.0.1:{port}"
    cmd = emo_command("serve", "--port", str(port), "--log-level", "warning")
    paths = []
    with started(cmd, log, env=child_env(), cwd=tmp) as server:
        wait_for_http(f"{url}/health", server, log)
        with sync_playwright() as p:
            flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={clip}"]
            try:
                browser = p.chromium.launch(executable_path=chromium(), headless=True, args=flags)
            except PlaywrightError as e:
                raise Failed(f"chromium did not start: {str(e).splitlines()[0]}") from None
            try:
                shots = [(name, view, "/") for name, view in PAGE_VIEWS.items()]
                shots.append(("web-app-server.png", PAGE_VIEWS["web-app.png"], "/server"))
                for name, view, where in shots:
                    context = browser.new_context(color_scheme="light", **view)
                    page = context.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                    page.goto(f"{url}{where}")
                    try:
                        if where == "/":  # the on-device page: both networks run in chromium
                            page.wait_for_function("window.emo !== undefined", timeout=30_000)
                            page.evaluate("window.emo.ready.then(() => true)")
                            page.click("#start")
                            page.wait_for_function(
                                "emo.stats.faces >= 2 && emo.stats.frames >= 30", timeout=60_000
                            )
                        else:  # the server-side page: frames go to /live
                            page.wait_for_function("classes.length > 0", timeout=30_000)  # /health answered
                            page.click("#camera")
                            page.wait_for_function(
                                "faces.length >= 2 && answered.length >= 3", timeout=60_000
                            )
                            page.wait_for_timeout(1000)  # a few more answers: a steady frame rate
                            page.wait_for_function("faces.length >= 2", timeout=30_000)
                    except PlaywrightError:
                        status = page.locator("#status").inner_text()
                        raise Failed(f"{where} showed no two labelled faces ({status}) {errors}") from None
                    image = Image.open(io.BytesIO(page.screenshot()))
                    context.close()
                    if errors:
                        raise Failed(f"the page reported errors: {'; '.join(errors)}")
                    write_png(image, out / name)
                    paths.append(out / name)
            finally:
                browser.close()
    return paths


def wait_for_http(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise Failed(f"emo serve exited ({server.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise Failed(f"emo serve did not answer {url} in {timeout:.0f} s:\n{tail(log)}")


def timeline_png(tmp: Path, out: Path) -> list[Path]:
    """The timeline of emo predict --report on the sample video (the one emo demo writes)."""
    video = sample_video(tmp / "sample.mp4", n_frames=90)
    report = tmp / "report"
    cmd = emo_command("predict", str(video), "--report", str(report))
    run(cmd, tmp / "predict.log", "emo predict", env=child_env(), cwd=tmp)
    path = out / "timeline.png"
    write_png(Image.open(report / "sample_timeline.png"), path)
    return [path]


def hydra_value(value: str) -> str:
    """A value for a Hydra override, quoted unless plain (paths with spaces, commas, ...)."""
    if re.fullmatch(r"[\w./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def confusion_png(tmp: Path, out: Path, data_dir: str) -> list[Path]:
    """emo evaluate's confusion matrix: the default model on FER-2013 PrivateTest."""
    name = weights.default_name()
    run_dir = tmp / "evaluate"
    overrides = {
        "ckpt_path": str(weights.checkpoint_path(name)),
        "split": "test",
        "tta": weights.recorded_tta(name),
        "data.data_dir": str(Path(data_dir).resolve()),
        "hydra.run.dir": str(run_dir),
    }
    cmd = emo_command("evaluate", *(f"{k}={hydra_value(v)}" for k, v in overrides.items()))
    run(cmd, tmp / "evaluate.log", "emo evaluate", env=child_env(), cwd=tmp)
    path = out / "confusion.png"
    write_png(Image.open(run_dir / "confusion_matrix.png"), path)
    return [path]


# ------------------------------------------------------------------------------------------ main
def parse_only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in IMAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(IMAGES)} (got {text!r})")
    return [n for n in IMAGES if n in names]


def size(path: Path) -> str:
    return f"{path.stat().st_size / 1000:.0f} KB"


def show_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/docs_images.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", type=parse_only, default=list(IMAGES), help=f"comma-separated, among {','.join(IMAGES)}"
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("EMO_DATA_DIR") or "data/fer2013",
        help="FER-2013, for confusion.png (default: $EMO_DATA_DIR, else data/fer2013)",
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="folder of the pictures (default: docs/images)"
    )
    args = parser.parse_args(argv)
    images = list(args.only)

    if "confusion" in images and not has_data(args.data_dir):
        print(f"confusion.png skipped: no FER-2013 in {args.data_dir} (--data-dir or EMO_DATA_DIR)")
        images.remove("confusion")
    lacking = missing(images)
    if lacking:
        print(f"docs_images: needs {'; '.join(lacking)}", file=sys.stderr)
        return 1

    # `kill` ends the script as Ctrl-C does: the finally blocks stop what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.out.mkdir(parents=True, exist_ok=True)
    makers = {
        "window": window_png,
        "web-app": web_app_png,
        "timeline": timeline_png,
        "confusion": lambda tmp, out: confusion_png(tmp, out, args.data_dir),
    }
    try:
        for name in images:
            with tempfile.TemporaryDirectory(prefix=f"emo-docs-{name}-") as tmp:
                for path in makers[name](Path(tmp), args.out):
                    print(f"{show_path(path)}  {size(path)}", flush=True)
    except (Failed, EmoError, subprocess.SubprocessError) as e:
        print(f"docs_images: {name}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("docs_images: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
