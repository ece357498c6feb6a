"""The on-device page without a browser: its settings come from Python's, its files are all
there, export-web writes a folder that works, emo serve serves it at /, and pipeline.js's pixel
arithmetic (run in Node.js) equals OpenCV's.

The browser itself (parity with ``EmotionRecognizer.predict``, the fake camera, offline use) is
tested in tests/test_web_browser.py.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from emo import weights
from emo.errors import EmoError
from emo.inference import webapp
from emo.inference.detect import YUNET_ANYSIZE_PATH, YUNET_PATH, YUNET_TOP_K, YuNetDetector
from emo.inference.realtime import REALTIME_DETECTOR

NODE = shutil.which("node")
needs_vendor = pytest.mark.skipif(
    bool(webapp.vendor_missing()), reason="onnxruntime-web is not installed here: make web"
)


@pytest.mark.runtime
def test_yunet_anysize_gives_the_original_outputs_at_its_size_and_runs_at_any_other():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, 3, 640, 640)).astype(np.float32)
    original = ort.InferenceSession(str(YUNET_PATH), providers=["CPUExecutionProvider"])
    anysize = ort.InferenceSession(str(YUNET_ANYSIZE_PATH), providers=["CPUExecutionProvider"])
    for a, b in zip(original.run(None, {"input": x}), anysize.run(None, {"input": x})):
        np.testing.assert_array_equal(a, b)
    outs = anysize.run(None, {"input": x[:, :, :256, :320]})
    assert [o.shape[1] for o in outs[:3]] == [32 * 40, 16 * 20, 8 * 10]  # cells per stride 8, 16, 32
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):  # why the copy exists
        original.run(None, {"input": x[:, :, :256, :320]})


def test_yunet_anysize_is_what_the_script_writes():
    onnx = pytest.importorskip("onnx")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "yunet_anysize", Path(__file__).parents[1] / "scripts" / "yunet_anysize.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.anysize().SerializeToString() == onnx.load(str(YUNET_ANYSIZE_PATH)).SerializeToString()


@pytest.mark.runtime
def test_config_takes_every_setting_from_python():
    config = webapp.web_config()
    photo = {k: v.default for k, v in inspect.signature(YuNetDetector).parameters.items()}
    det = config["detector"]
    assert det["max_side"] == photo["max_side"] and det["min_face"] == photo["min_face"]
    assert (
        det["score_threshold"] == photo["score_threshold"] and det["nms_threshold"] == photo["nms_threshold"]
    )
    assert det["framing"] == photo["framing"] and det["centre"] == list(photo["centre"])
    assert det["top_k"] == YUNET_TOP_K == YuNetDetector().top_k
    assert det["track_face"] == YuNetDetector.track_face and det["raw_per_crop"] == YuNetDetector.raw_per_crop
    assert config["live"]["detector"] == REALTIME_DETECTOR["yunet"]
    names = [m["name"] for m in config["models"]]
    assert names == [weights.default_name(), weights.fast_name()]
    for entry in config["models"]:
        path = weights.model_path(entry["name"], weights.recorded_backend(entry["name"]))
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        meta = meta.custom_metadata_map
        assert entry["file"] == f"models/{path.name}" and entry["bytes"] == path.stat().st_size
        assert entry["class_names"] == json.loads(meta["emo_class_names"])
        assert entry["preprocess"] == json.loads(meta["emo_preprocess"])
        assert entry["tta"] == meta["emo_tta"]
        assert entry["accuracy"] == weights.info(entry["name"])["privatetest"]["accuracy"]


def test_one_model_named_twice_is_offered_once():
    config = webapp.web_config(["default", weights.default_name(), "ferplus"])
    assert [m["name"] for m in config["models"]] == [weights.default_name(), weights.ferplus_name()]
    assert len(config["models"][1]["class_names"]) == 8


@pytest.mark.runtime
@needs_vendor
def test_site_holds_every_file_the_page_loads_and_the_worker_caches_them_all():
    files = webapp.site()
    config = json.loads(files["config.json"])
    assert "server" in config and config["server"] is False
    assert not any("_path" in m for m in config["models"])
    for key, value in files.items():
        assert isinstance(value, bytes) or value.is_file(), key
    assert {config["detector"]["file"], *(m["file"] for m in config["models"])} <= set(files)
    html = files["index.html"].read_text()
    for ref in ["manifest.webmanifest", "style.css", "app.js", "icon.svg", "icon-192.png"]:
        assert f'"{ref}"' in html and ref in files
    worker = files["sw.js"].decode()
    cached = json.loads(worker.split("const FILES = ")[1].split(";\n")[0])
    assert set(cached) == {"./"} | set(files) - {"vendor/LICENSE", "sw.js"}
    manifest = json.loads(files["manifest.webmanifest"].read_text())
    assert {i["src"] for i in manifest["icons"]} <= set(files)
    app = files["app.js"].read_text()
    assert "./vendor/ort.wasm.min.mjs" in app and "vendor/ort.wasm.min.mjs" in files
    # nothing the page loads comes from elsewhere
    remote = re.compile(r"""(?:src|href)=["']?(?:https?:)?//|(?:fetch|import|url)\(\s*["']?(?:https?:)?//""")
    for key in ("index.html", "app.js", "pipeline.js", "style.css", "manifest.webmanifest"):
        assert not remote.search(files[key].read_text()), key


@needs_vendor
def test_the_worker_cache_is_named_after_the_content(monkeypatch, tmp_path):
    name = lambda files: files["sw.js"].decode().split('const CACHE = "')[1].split('"')[0]  # noqa: E731
    before = name(webapp.site())
    assert name(webapp.site()) == before
    changed = tmp_path / "web"
    shutil.copytree(webapp.WEB_DIR, changed, ignore=shutil.ignore_patterns("vendor"))
    (changed / "style.css").write_text((changed / "style.css").read_text() + "\n/* changed */\n")
    monkeypatch.setattr(webapp, "WEB_DIR", changed)
    assert name(webapp.site()) != before


def test_a_missing_runtime_is_one_line_naming_make_web(monkeypatch, tmp_path):
    monkeypatch.setattr(webapp, "VENDOR_DIR", tmp_path / "vendor")
    assert webapp.vendor_missing() == list(webapp.VENDOR_FILES)
    with pytest.raises(EmoError, match=r"onnxruntime-web.*make web"):
        webapp.site()
    with pytest.raises(SystemExit) as exit_:
        webapp.main([str(tmp_path / "site")])
    assert exit_.value.code == 1 and not (tmp_path / "site").exists()


@pytest.mark.runtime
@needs_vendor
def test_export_web_writes_a_whole_folder_and_never_clobbers_one(tmp_path, capsys):
    out = tmp_path / "site"
    assert webapp.main([str(out)]) == 0
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == set(webapp.site())
    assert (out / "models" / "yunet.onnx").read_bytes() == YUNET_ANYSIZE_PATH.read_bytes()
    assert "python -m http.server" in capsys.readouterr().err
    assert not list(tmp_path.glob(".site.tmp-*"))
    # a folder with files in it is refused, then replaced with --overwrite
    (out / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit):
        webapp.main([str(out)])
    assert "is not empty" in capsys.readouterr().err and (out / "mine.txt").exists()
    assert webapp.main([str(out), "--overwrite", "--model", "fast"]) == 0
    assert not (out / "mine.txt").exists()
    assert [m["name"] for m in json.loads((out / "config.json").read_text())["models"]] == [
        weights.fast_name()
    ]
    # a file, or an unknown model, fails before anything is written
    (tmp_path / "file").write_text("x")
    for argv, message in [
        ([str(tmp_path / "file")], "is a file"),
        ([str(tmp_path / "new"), "--model", "nosuch"], "no bundled model named 'nosuch'"),
    ]:
        with pytest.raises(SystemExit):
            webapp.main(argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------ emo serve
@pytest.fixture(scope="module")
def serve():
    pytest.importorskip("fastapi")
    from emo.inference import serve

    return serve


def TestClient(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture(scope="module")
def recognizer():
    from emo import EmotionRecognizer

    return EmotionRecognizer.from_pretrained("fast")


@needs_vendor
def test_serve_lands_on_the_device_page_with_the_server_page_one_click_away(serve, recognizer):
    client = TestClient(serve.create_app(recognizer))
    landing = client.get("/")
    assert landing.status_code == 200 and landing.text == (webapp.WEB_DIR / "index.html").read_text()
    assert 'id="server-mode" href="server"' in landing.text
    assert json.loads(client.get("/config.json").content)["server"] is True
    server_page = client.get("/server")
    assert (
        server_page.status_code == 200
        and 'href="./"' in server_page.text
        and "static/app.js" in server_page.text
    )
    types = {
        "/app.js": "text/javascript",
        "/vendor/ort.wasm.min.mjs": "text/javascript",
        "/vendor/ort-wasm-simd-threaded.wasm": "application/wasm",
        "/manifest.webmanifest": "application/manifest+json",
        "/sw.js": "text/javascript",
        "/models/yunet.onnx": "application/octet-stream",
    }
    for url, kind in types.items():
        answer = client.get(url)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), url
    assert client.get("/sw.js").headers["cache-control"] == "no-cache"
    assert client.head("/config.json").status_code == 200  # how the server-side page finds this one
    assert client.get("/health").json()["status"] == "ok"  # the API is still there
    assert "/config.json" not in client.get("/openapi.json").json()["paths"]


def test_serve_without_the_runtime_lands_on_the_server_page(serve, recognizer, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(webapp, "VENDOR_DIR", tmp_path)
    client = TestClient(serve.create_app(recognizer))
    assert "static/app.js" in client.get("/").text
    assert client.get("/config.json").status_code == 404 and client.head("/config.json").status_code == 404
    assert "make web" in caplog.text


def test_https_options_are_checked_before_loading(serve, tmp_path):
    for argv, message in [
        (["--certfile", "c.pem", "--keyfile", "k.pem"], "go with --https"),
        (["--https", "--certfile", "c.pem"], "both --certfile and --keyfile"),
        (
            ["--https", "--certfile", str(tmp_path / "c.pem"), "--keyfile", str(tmp_path / "k.pem")],
            "no such file",
        ),
    ]:
        with pytest.raises(EmoError, match=message):
            serve.check_args(serve.parse_args(argv))


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl command")
def test_self_signed_certificate_is_made_once_and_reused(serve, tmp_path):
    cert, key = serve.self_signed(tmp_path)
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    stamp = cert.stat().st_mtime_ns
    assert serve.self_signed(tmp_path) == (cert, key) and cert.stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- pipeline.js in Node.js
def node_pipeline(script: str, data: dict) -> dict:
    """Run ``script`` (an async function body with ``P``, pipeline.js's exports, and ``data``) in
    Node.js and return what it returns, as JSON."""
    module = (webapp.WEB_DIR / "pipeline.js").as_uri()
    program = (
        f"import * as P from {json.dumps(module)};\n"
        "const data = JSON.parse(require_stdin());\n"
        f"const out = await (async () => {{ {script} }})();\n"
        "process.stdout.write(JSON.stringify(out));\n"
    ).replace(
        "require_stdin()",
        "await new Promise((ok) => { let s = ''; process.stdin.on('data', (c) => (s += c)); process.stdin.on('end', () => ok(s)); })",
    )
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", program], input=json.dumps(data), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not NODE, reason="no node")
def test_pipeline_pixels_equal_opencv():
    rng = np.random.default_rng(1)
    cases = []
    for h, w, dh, dw in [
        (480, 640, 240, 320),  # 2x: OpenCV's fast area kernel
        (300, 300, 100, 100),  # 3x
        (481, 643, 240, 320),  # generic area shrink
        (150, 150, 48, 48),  # a face crop to the network's side
        (97, 61, 48, 48),
        (30, 30, 48, 48),  # a small face, enlarged
        (40, 37, 48, 48),
    ]:
        img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)  # image-like, not only noise
        cases.append({"w": w, "h": h, "dw": dw, "dh": dh, "data": img.ravel().tolist()})
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgba = np.concatenate([bgr[..., ::-1], np.full((20, 30, 1), 255, np.uint8)], axis=2)
    out = node_pipeline(
        """
        const resized = data.cases.map((c) => Array.from(P.resizeArea({data: Uint8Array.from(c.data), width: c.w, height: c.h}, c.dw, c.dh).data));
        const grey = Array.from(P.grey(Uint8Array.from(data.rgba), 30, 20).data);
        const img = {data: Uint8Array.from(data.small), width: 7, height: 5};
        const crops = data.boxes.map((b) => { const c = P.cropFace(img, b); return [c.width, c.height, Array.from(c.data)]; });
        const rounds = [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001].map(P.roundHalfEven);
        return {resized, grey, crops, rounds};
        """,
        {
            "cases": cases,
            "rgba": rgba.ravel().tolist(),
            "small": np.arange(35, dtype=np.uint8).tolist(),
            "boxes": [[1, 1, 3, 3], [-2, -1, 4, 4], [5, 3, 6, 6], [-20, -20, 100, 100]],
        },
    )
    for case, got in zip(cases, out["resized"]):
        img = np.array(case["data"], np.uint8).reshape(case["h"], case["w"])
        want = cv2.resize(img, (case["dw"], case["dh"]), interpolation=cv2.INTER_AREA)
        got = np.array(got, np.uint8).reshape(case["dh"], case["dw"])
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (
            case["h"],
            case["w"],
            diff.max(),
            (diff > 0).mean(),
        )
    np.testing.assert_array_equal(
        np.array(out["grey"]).reshape(20, 30), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    )
    from emo.inference.detect import crop_faces

    small = np.arange(35, dtype=np.uint8).reshape(5, 7)
    boxes = [[1, 1, 3, 3], [-2, -1, 4, 4], [5, 3, 6, 6], [-20, -20, 100, 100]]
    for (w, h, data), want in zip(out["crops"], crop_faces(small, np.array(boxes))):
        np.testing.assert_array_equal(np.array(data, np.uint8).reshape(h, w), want)
    assert out["rounds"] == [round(v) for v in [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001]]


def test_serve_offers_the_served_model_first_on_the_device_page(serve):
    from emo import EmotionRecognizer

    def first(name):
        return serve.page_models(EmotionRecognizer.from_pretrained(name))

    assert first("default") == ["default", "fast"]
    assert first("fast") == ["fast", "default"]
    assert first("vgg_s_kd") == ["vgg_s_kd", "default", "fast"]
    assert webapp.web_config(first("vgg_s_kd"))["models"][0]["name"] == "vgg_s_kd"


def test_vendoring_without_npm_says_why_in_one_line(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vendor", Path(__file__).parents[1] / "web" / "vendor.py")
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    assert vendor.FILES + ("LICENSE",) == webapp.VENDOR_FILES  # one list of files, both sides
    monkeypatch.setattr(vendor, "VENDOR", tmp_path / "vendor")
    monkeypatch.setattr(vendor.shutil, "which", lambda name: None)
    assert vendor.vendor() == "npm is not installed: install Node.js and npm, then run make web"
    assert not (tmp_path / "vendor").exists()
