"""The on-device page in a real browser: Debian's chromium driven by Playwright (no browser
download), its fake camera playing a clip of the sample faces.

- parity: on the samples and generated scenes with faces of several sizes, the page's own
  pipeline gives ``EmotionRecognizer.predict``'s boxes (IoU >= 0.9), labels (>= 98% of faces) and
  probabilities (within 0.02), for the default and the fast model;
- real use: ``emo serve``'s landing page finds and labels the faces of the camera on a desktop and
  in a phone's viewport (390x844, touch), with no request after the page and its models loaded,
  and saves a screenshot of each;
- offline: ``emo export-web``'s folder served by ``python -m http.server`` works the same, and
  after one visit it opens and runs with the server gone (the service worker);
- bad cases in plain words: camera permission denied, no camera, no WebAssembly SIMD, a model file
  that fails to load.

Screenshots go to ``$EMO_TEST_ARTIFACTS`` when set, else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from emo import EmotionRecognizer
from emo.inference import webapp
from emo.inference.video import iou
from emo.samples import moving_face_frames, sample_path, write_y4m
from tests.helpers import ServerThread

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("EMO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM, reason="no chromium: apt-get install chromium, or set EMO_CHROMIUM"),
    pytest.mark.skipif(
        bool(webapp.vendor_missing()), reason="onnxruntime-web is not installed here: make web"
    ),
]
#: A phone in chromium's emulation: touch, a mobile viewport, a 2x screen.
PHONE = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
#: Chromium as a test machine runs it: no background traffic, no first-run UI.
QUIET = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


def camera_flags(clip: Path | None, grant: bool = True) -> list[str]:
    flags = list(QUIET)
    if clip is not None:
        flags += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}"]
    if grant:
        flags.append("--use-fake-ui-for-media-stream")
    return flags


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(
    url: str, proc: subprocess.Popen, timeout: float = 60, context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited ({proc.returncode})"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered {url} in {timeout:.0f} s")


class StaticServer:
    """``python -m http.server PORT -d FOLDER``, as the docs tell users to serve export-web's folder."""

    def __init__(self, folder: Path, bind: str = "127.0.0.1", host: str = "127.0.0.1"):
        self.port = free_port()
        self.url = f"http://{host}:{self.port}/"
        self.cmd = [sys.executable, "-m", "http.server", str(self.port), "--bind", bind, "-d", str(folder)]

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "config.json", self.proc)
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()


def emo_server() -> ServerThread:
    """``emo serve``'s app under uvicorn with its own settings, in a thread."""
    from emo.inference import serve

    return ServerThread(serve.create_app(EmotionRecognizer.from_pretrained("fast")))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    out = Path(os.environ.get("EMO_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screens"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 30 frames/s 640x480 clip of the astronaut's face gliding (about 150 px wide)."""
    return write_y4m(tmp_path_factory.mktemp("clip") / "face.y4m", moving_face_frames(90))


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> Path:
    return webapp.export_web(tmp_path_factory.mktemp("export") / "site")


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


def open_page(browser, url: str, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return context, page, errors


def wait_ready(page) -> None:
    page.wait_for_function("window.emo !== undefined", timeout=30_000)
    page.evaluate("window.emo.ready.then(() => true)")


def status(page) -> tuple[str, bool]:
    return page.inner_text("#status"), "error" in (page.get_attribute("#status", "class") or "")


# ------------------------------------------------------------------------------ parity
def scenes() -> dict[str, np.ndarray]:
    """The two samples, and scenes of faces of several sizes (30 to 300 px, some cut by the border)
    pasted on textured backgrounds, 640x480 and 1280x720."""
    rng = np.random.default_rng(7)
    faces = {n: cv2.imread(str(sample_path(n))) for n in ("astronaut", "camera")}
    out = dict(faces)
    layouts = [
        ((640, 480), [("astronaut", 300, 40, 60), ("camera", 220, 380, 200)]),
        ((640, 480), [("astronaut", 160, 20, 20), ("camera", 160, 240, 20), ("astronaut", 120, 460, 300)]),
        ((640, 480), [("astronaut", 96, 50, 50), ("camera", 128, 200, 250), ("astronaut", 200, 420, 40)]),
        (
            (1280, 720),
            [("astronaut", 400, 100, 150), ("camera", 300, 700, 300), ("astronaut", 140, 1100, 40)],
        ),
        ((1280, 720), [("astronaut", 240, -60, 200), ("camera", 260, 1120, 460)]),  # faces at the border
        ((640, 480), [("astronaut", 500, 70, -10)]),  # a close-up
        ((640, 480), [("camera", 260, -80, -40), ("astronaut", 180, 480, 320)]),
        ((1280, 720), [("astronaut", 180, 60 + 220 * i, 260 + 40 * (i % 2)) for i in range(5)]),
        # a crowd: 12 faces from ~30 to ~100 px
        (
            (1280, 720),
            [
                (("astronaut", "camera")[i % 2], 80 + 16 * i, 20 + 210 * (i % 6), 40 + 330 * (i // 6))
                for i in range(12)
            ],
        ),
        (
            (960, 540),
            [
                (("camera", "astronaut")[i % 2], 110 + 20 * i, 10 + 190 * (i % 5), 20 + 260 * (i // 5))
                for i in range(10)
            ],
        ),
    ]
    for k, ((w, h), placed) in enumerate(layouts):
        grad = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
        noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 3)
        scene = np.clip(grad + noise + rng.uniform(-30, 30, 3), 0, 255).astype(np.uint8)
        for name, side, x, y in placed:
            tile = cv2.resize(faces[name], (side, side), interpolation=cv2.INTER_AREA)
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + side, w), min(y + side, h)
            scene[y0:y1, x0:x1] = tile[y0 - y : y1 - y, x0 - x : x1 - x]
        out[f"scene{k}_{w}x{h}"] = scene
    return out


def data_url(image: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", image)  # lossless: the browser decodes the very pixels Python reads
    assert ok
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def compare(python_faces, browser_faces) -> list[dict]:
    """Each Python face and its browser face (the best box overlap)."""
    pairs = []
    free = list(range(len(browser_faces)))
    for face in python_faces:
        overlaps = [iou(face.box, browser_faces[i]["box"]) for i in free]
        best = free.pop(int(np.argmax(overlaps))) if overlaps else None
        b = browser_faces[best] if best is not None else None
        pairs.append(
            {
                "iou": max(overlaps) if overlaps else 0.0,
                "same_label": b is not None and b["label"] == face.label,
                "max_diff": max(abs(b["scores"][c] - p) for c, p in face.scores.items()) if b else 1.0,
            }
        )
    return pairs


@pytest.mark.parametrize("purpose", ["default", "fast"])
def test_page_pipeline_matches_python_on_photos_and_scenes(playwright, site_dir, purpose):
    recognizer = EmotionRecognizer.from_pretrained(purpose)
    images = scenes()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET)
    try:
        with StaticServer(site_dir) as server:
            _, page, errors = open_page(browser, server.url)
            wait_ready(page)
            page.evaluate("n => window.emo.chooseModel(n)", recognizer.source)
            assert page.evaluate("window.emo.pipeline.classifier.meta.name") == recognizer.source
            pairs, counts = [], []
            for name, image in images.items():
                browser_faces = page.evaluate("u => window.emo.predictUrl(u)", data_url(image))
                python_faces = recognizer.predict(image)
                counts.append((name, len(python_faces), len(browser_faces)))
                pairs += compare(python_faces, browser_faces)
            assert not errors
    finally:
        browser.close()
    n = len(pairs)
    labels = sum(p["same_label"] for p in pairs) / n
    worst_iou = min(p["iou"] for p in pairs)
    worst_diff = max(p["max_diff"] for p in pairs)
    print(
        f"\n{purpose}: {n} faces in {len(images)} images; IoU >= {worst_iou:.3f}, labels {labels:.1%}, "
        f"probabilities within {worst_diff:.4f}",
        file=sys.stderr,
    )
    assert n >= 40 and all(p == b for _, p, b in counts), counts  # the same faces found
    assert worst_iou >= 0.9
    assert labels >= 0.98
    assert worst_diff <= 0.02


def clip_frames() -> list[np.ndarray]:
    """40 frames: the astronaut gliding, and the camera operator, who comes in at frame 15 and
    leaves at frame 30 (a new id, then a lost track)."""
    frames = moving_face_frames(40, side=300)
    third = cv2.resize(cv2.imread(str(sample_path("camera"))), (200, 200), interpolation=cv2.INTER_AREA)
    out = []
    for i, frame in enumerate(frames):
        frame = frame.copy()
        if 15 <= i < 30:
            frame[260:460, 420:620] = third
        out.append(frame)
    return out


def test_page_live_loop_matches_python_realtime_ids_and_smoothing(playwright, site_dir):
    from emo.inference.realtime import load_model, predict_faces
    from emo.inference.video import FaceTracker, Smoother

    config = webapp.web_config()
    model = load_model("default", threads=1)
    tracker, smoother = (
        FaceTracker(model.detector, config["live"]["detect_every"]),
        Smoother(config["live"]["smooth"]),
    )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET)
    pairs, ids = [], []
    try:
        with StaticServer(site_dir) as server:
            _, page, errors = open_page(browser, server.url)
            wait_ready(page)
            for frame in clip_frames():
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                python_faces = smoother(predict_faces(model, grey, tracker(grey)))
                browser_faces = page.evaluate("u => window.emo.liveUrl(u)", data_url(frame))
                assert len(browser_faces) == len(python_faces)
                pairs += compare(python_faces, browser_faces)
                ids.append(([f.face_id for f in python_faces], [f["faceId"] for f in browser_faces]))
            assert not errors
    finally:
        browser.close()
    assert all(p == b for p, b in ids), ids
    assert {i for p, _ in ids for i in p} == {0, 1}  # the second face got an id of its own
    assert max(len(p) for p, _ in ids) == 2
    assert min(p["iou"] for p in pairs) >= 0.9
    assert sum(p["same_label"] for p in pairs) / len(pairs) >= 0.98
    assert max(p["max_diff"] for p in pairs) <= 0.02


# ---------------------------------------------------------------------------- real use
def run_camera(page, seconds: float = 3.0) -> dict:
    """Start the camera by a click (or a tap), let it run, and return the page's counters."""
    page.locator("#start").click()
    page.wait_for_function("window.emo.stats.frames >= 10 && window.emo.stats.faces >= 1", timeout=30_000)
    time.sleep(seconds)
    return page.evaluate("({...window.emo.stats})")


def labelled_face(page) -> str:
    items = page.locator("#faces li .title").all_inner_texts()
    assert items, "no face listed"
    return items[0]


@pytest.mark.parametrize(
    "device",
    [
        pytest.param({"viewport": {"width": 1280, "height": 800}}, id="desktop"),
        pytest.param({"viewport": {"width": 390, "height": 844}, **PHONE}, id="phone"),
        pytest.param({"viewport": {"width": 844, "height": 390}, **PHONE}, id="phone-landscape"),
    ],
)
def test_serve_landing_page_labels_the_camera_faces_with_no_request_after_load(
    playwright, clip, artifacts, device, request
):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=camera_flags(clip))
    try:
        with emo_server() as server:
            context, page, errors = open_page(browser, server.url + "/", **device)
            requests: list[tuple[float, str]] = []
            context.on("request", lambda r: requests.append((time.monotonic(), r.url)))
            wait_ready(page)
            page.evaluate("navigator.serviceWorker.ready.then(() => true)")
            time.sleep(1.0)  # the worker's first caching of the page's files
            cdp = context.new_cdp_session(page)
            installable = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
            # Playwright's contexts are incognito windows, where chromium installs nothing
            installable = [e for e in installable if e["errorId"] != "in-incognito"]
            manifest = cdp.send("Page.getAppManifest")
            loaded = time.monotonic()
            stats = run_camera(page)
            after = [url for t, url in requests if t > loaded and not url.startswith("data:")]
            title = labelled_face(page)
            text, is_error = status(page)
            shot = artifacts / f"web-{request.node.callspec.id}.png"
            page.screenshot(path=str(shot))
            width = page.evaluate("document.documentElement.scrollWidth")
            canvas = page.locator("#view").bounding_box()
            assert not errors and not is_error, (errors, text)
    finally:
        browser.close()
    classes = EmotionRecognizer.from_pretrained("default").class_names
    assert after == [], f"requests after the page and its models loaded: {after}"
    assert installable == [], installable  # an installable app (manifest, icons, service worker)
    assert manifest["errors"] == [] and manifest["url"].endswith("/manifest.webmanifest")
    assert stats["frames"] >= 10 and stats["fps"] > 1
    assert title.startswith("face #0: ") and title.split()[2] in classes  # one face, one id, a label
    viewport = device["viewport"]["width"]
    assert width <= viewport and canvas["width"] <= viewport  # no sideways scrolling on a phone
    assert shot.stat().st_size > 10_000


def test_export_web_works_from_a_static_server_and_offline_after_one_visit(playwright, clip, site_dir):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=camera_flags(clip))
    try:
        server = StaticServer(site_dir).__enter__()  # python -m http.server
        context, page, errors = open_page(browser, server.url)
        wait_ready(page)
        assert page.get_attribute("#server-mode", "hidden") is not None  # no server mode on a static host
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        run_camera(page, 1.0)
        labelled_face(page)
        page.wait_for_function(
            "navigator.serviceWorker.controller !== null || location.reload()", timeout=10_000
        )
        server.stop()  # the network is gone: nothing answers on that port any more
        with pytest.raises(sync_api.Error, match="Failed to fetch"):
            page.evaluate("fetch('/not-cached').then(r => r.status)")
        page.reload()
        wait_ready(page)
        run_camera(page, 1.0)
        title = labelled_face(page)
        text, is_error = status(page)
        assert not is_error and not errors, (text, errors)
        assert page.evaluate("navigator.serviceWorker.controller !== null")
    finally:
        browser.close()
    assert title.startswith("face #0: ")


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl command")
def test_serve_https_opens_the_camera_from_another_machine_s_address(playwright, clip, tmp_path):
    """What a phone on the LAN does: open https://<this machine's address>:PORT/, accept the
    self-signed certificate, use the camera (a secure origin)."""
    from emo.inference.serve import lan_address

    lan = lan_address()
    if lan is None:
        pytest.skip("no network address on this machine")
    port = free_port()
    env = {**os.environ, "EMO_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "emo.inference.serve", "--https", "--host", "0.0.0.0", "--port", str(port)]
    cmd += ["--model", "fast", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    url = f"https://{lan}:{port}/"
    try:
        wait_http(url + "health", proc, timeout=120, context=insecure)
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*camera_flags(clip), "--ignore-certificate-errors"]
        )
        try:
            _, page, errors = open_page(browser, url, ignore_https_errors=True)
            wait_ready(page)
            assert page.evaluate("window.isSecureContext")
            run_camera(page, 1.0)
            title = labelled_face(page)
            assert not errors and not status(page)[1]
        finally:
            browser.close()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert f"open https://{lan}:{port}/" in out and "self-signed certificate" in out
    assert title.startswith("face #0: ")


# ---------------------------------------------------------------------------- bad cases
def camera_refusal(playwright, url: str, flags: list[str]):
    """Open the page in a chromium started with ``flags``, press Start camera, and return the
    page (its browser still open) once it shows an error."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
    _, page, _ = open_page(browser, url)
    wait_ready(page)  # the models run whatever the camera does: photos work
    page.locator("#start").click()
    page.wait_for_function(SHOWS_ERROR)
    return browser, page


SHOWS_ERROR = "document.querySelector('#status').classList.contains('error')"


def test_bad_cases_are_told_in_plain_words(playwright, clip, site_dir):
    from emo.inference.serve import lan_address

    with StaticServer(site_dir) as server:
        # The camera permission denied: no automatic "allow" (headless chromium then refuses).
        browser, page = camera_refusal(playwright, server.url, camera_flags(clip, grant=False))
        try:
            assert status(page)[0].startswith("Camera permission was denied")
        finally:
            browser.close()
        # No camera at all; a photo still works without one.
        browser, page = camera_refusal(playwright, server.url, camera_flags(None))
        try:
            assert status(page)[0].startswith("No camera was found")
            page.locator("#photo").set_input_files(str(sample_path("astronaut")))
            page.wait_for_function("document.querySelectorAll('#faces li').length === 1")
            assert not status(page)[1]
        finally:
            browser.close()
        # Plain http from another machine's address: not a secure origin, so no camera API at all.
        lan = lan_address()
        if lan is not None:
            with StaticServer(site_dir, bind="0.0.0.0", host=lan) as remote:
                browser, page = camera_refusal(playwright, remote.url, camera_flags(clip))
                try:
                    assert not page.evaluate("window.isSecureContext")
                    assert status(page)[0].startswith("The camera needs a secure page")
                finally:
                    browser.close()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=camera_flags(clip))
        try:
            # A browser without WebAssembly SIMD (its feature test answers no).
            context = browser.new_context()
            context.add_init_script("WebAssembly.validate = () => false;")
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_function(SHOWS_ERROR)
            assert "lacks WebAssembly SIMD" in status(page)[0]
            assert page.locator("#start").is_disabled()
            # A model file that does not load.
            context = browser.new_context()
            context.route("**/models/*.onnx", lambda route: route.abort())
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_function(SHOWS_ERROR)
            assert status(page)[0].startswith("Could not load models/")
            assert "reload the page" in status(page)[0]
        finally:
            browser.close()
