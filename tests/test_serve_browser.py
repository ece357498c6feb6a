"""emo-serve's page in a real browser: headless chromium, a fake camera playing the sample faces.

Needs the system's chromium (Debian: ``apt-get install chromium``; or ``EMO_CHROMIUM=/path``) and
Playwright for Python, which drives it (Playwright's own browser download is not needed). The
screenshot goes to ``$EMO_TEST_ARTIFACTS`` when set, else to the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from emo.inference import serve, webapp  # noqa: E402
from emo.samples import moving_face_frames, sample_path, write_y4m  # noqa: E402
from tests.helpers import ServerThread  # noqa: E402

CHROMIUM = os.environ.get("EMO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM, reason="no chromium: apt-get install chromium, or set EMO_CHROMIUM"),
]


# In one animation frame, after the page's own drawing: the faces drawn and the colour of the
# canvas on the left edge of the first box.
DRAWN = """() => new Promise((resolve) => requestAnimationFrame(() => {
  const f = faces[0];
  if (!f) return resolve(null);
  const [x, y, w, h] = f.box;
  const px = canvas.getContext("2d").getImageData(x + 1, y + Math.floor(h / 2), 1, 1).data;
  resolve({face: f, pixel: Array.from(px.slice(0, 3)), color: colorOf(f.label), fps: answered.length});
}))"""


def test_page_shows_a_labelled_face_box_from_the_camera(tmp_path):
    video = write_y4m(tmp_path / "faces.y4m", moving_face_frames(60))
    out = Path(os.environ.get("EMO_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    recognizer = serve.load_recognizer()
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    with ServerThread(serve.create_app(recognizer)) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/server")  # the server-side page (/ is the on-device one)
            page.wait_for_function("classes.length > 0", timeout=30_000)  # /health answered
            if not webapp.vendor_missing():  # the way back to the on-device page, where there is one
                page.wait_for_function("!document.getElementById('device-mode').hidden", timeout=10_000)
            page.click("#camera")
            page.wait_for_selector("#faces li", timeout=60_000)
            page.wait_for_function("answered.length >= 2", timeout=60_000)  # a few frames round-tripped
            drawn = page.evaluate(DRAWN)
            items = page.locator("#faces li").all_inner_texts()
            page.screenshot(path=str(out / "serve_page.png"))
            status = page.locator("#status").inner_text()
            # the upload form: a photo replaces the camera view
            page.set_input_files("#file", str(sample_path("astronaut")))
            with page.expect_request(lambda r: "/predict" in r.url) as sent:
                page.click("#upload button[type=submit]")
            # the TTA menu starts on "auto": no tta sent, so /predict uses the model's recorded one
            assert page.eval_on_selector("#tta", "e => e.value") == "" and "tta=" not in sent.value.url
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('astronaut.png')"
            )
            photo_status = page.locator("#status").inner_text()
            photo_items = page.locator("#faces li").all_inner_texts()
            page.screenshot(path=str(out / "serve_photo.png"))
            # the API docs render from emo's own files (this browser has no internet)
            page.goto(server.url + "/docs")
            page.wait_for_selector("text=/predict", timeout=30_000)
            page.screenshot(path=str(out / "serve_docs.png"))
        finally:
            browser.close()
    print(f"screenshot: {out / 'serve_page.png'}")
    assert not errors, errors
    assert drawn is not None, f"no face drawn; status: {status}"
    face = drawn["face"]
    assert face["label"] in recognizer.class_names and face["box"][2] >= 100  # the ~150 px face
    assert items and items[0].split()[0] in recognizer.class_names  # the list beside the canvas
    expected = [int(drawn["color"][i : i + 2], 16) for i in (1, 3, 5)]
    assert drawn["pixel"] == expected, f"box edge is {drawn['pixel']}, not the label's colour {expected}"
    assert status.startswith("Live:"), status
    assert photo_status == "astronaut.png: 1 face(s) in 256×256 px."
    assert len(photo_items) == 1 and re.fullmatch(r"happy \d+% at \(\d+, \d+\), \d+×\d+ px", photo_items[0])
