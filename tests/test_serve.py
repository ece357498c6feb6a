"""emo-serve: every endpoint and every kind of bad input, through FastAPI's TestClient."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from emo import weights  # noqa: E402
from emo.inference import serve  # noqa: E402
from emo.inference.realtime import REALTIME_DETECTOR  # noqa: E402
from emo.inference.recognizer import Face  # noqa: E402
from emo.samples import sample_path  # noqa: E402

ASTRONAUT = sample_path("astronaut").read_bytes()
#: Small limits so the bad-input cases stay small.
MAX_UPLOAD, MAX_PIXELS = 300_000, 1_000_000


@pytest.fixture(scope="module")
def recognizer():
    return serve.load_recognizer("vgg_s")


@pytest.fixture(scope="module")
def client(recognizer):
    with TestClient(serve.create_app(recognizer, max_upload=MAX_UPLOAD, max_pixels=MAX_PIXELS)) as c:
        yield c


def post(client, data: bytes, name: str = "face.png", query: str = ""):
    return client.post(f"/predict{query}", files={"file": (name, data, "application/octet-stream")})


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_health_names_the_model_and_classes(client, recognizer):
    assert client.get("/health").json() == {
        "status": "ok",
        "model": "vgg_s",
        "backend": weights.recorded_backend("vgg_s"),  # int8 where it keeps fp32's accuracy
        "classes": recognizer.class_names,
    }


@pytest.mark.parametrize("tta", ["none", "flip", "tencrop"])
def test_predict_gives_what_the_recognizer_gives(client, recognizer, tta):
    answer = post(client, ASTRONAUT, query=f"?tta={tta}").json()
    expected = recognizer.predict(str(sample_path("astronaut")), tta=tta)
    assert answer == {"faces": [f.as_dict() for f in expected], "width": 256, "height": 256}
    (face,) = answer["faces"]
    x, y, w, h = face["box"]
    assert face["label"] == "happy" and 0 <= x < x + w <= 256 and 0 <= y < y + h <= 256 and w > 50
    assert list(face["scores"]) == recognizer.class_names
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_without_tta_uses_the_models_recorded_one(client, recognizer):
    from emo import weights

    recorded = weights.recorded_tta("vgg_s")
    assert recognizer.tta == recorded != "none"
    photo = str(sample_path("astronaut"))
    answer = post(client, ASTRONAUT).json()
    assert answer["faces"] == [f.as_dict() for f in recognizer.predict(photo, tta=recorded)]
    plain = post(client, ASTRONAUT, query="?tta=none").json()
    assert plain["faces"] == [f.as_dict() for f in recognizer.predict(photo, tta="none")]
    assert answer["faces"][0]["scores"] != plain["faces"][0]["scores"]  # the query's tta wins
    (tta,) = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["parameters"]
    assert tta["name"] == "tta" and not tta.get("required") and "recorded" in tta["description"]


class RecordingRecognizer:
    """Answers one fixed face and remembers the tta of each call."""

    source, class_names = "stub", ["a", "b"]
    backend = type("Backend", (), {"name": "stub"})

    def __init__(self):
        self.ttas = []

    def predict(self, image, tta=None):
        self.ttas.append(tta)
        return [Face((0, 0, 1, 1), "a", {"a": 1.0, "b": 0.0})]


def test_live_keeps_tta_none_for_speed(recognizer):
    assert serve.video_recognizer(recognizer).tta == "none" and recognizer.tta != "none"
    stub = RecordingRecognizer()
    frame = png(np.full((8, 8), 1, np.uint8))
    with TestClient(serve.create_app(stub)) as c:
        for query in ("", "?tta=flip"):
            with c.websocket_connect(f"/live{query}") as ws:
                ws.send_bytes(frame)
                assert ws.receive_json()["faces"][0]["label"] == "a"
        post(c, frame)
    assert stub.ttas == ["none", "flip", None]  # /predict: None, the recognizer's own default


def test_predict_without_a_face_and_in_jpeg(client):
    wall = np.tile(np.linspace(40, 220, 256, dtype=np.uint8), (256, 1))  # a plain gradient: no face
    assert post(client, png(cv2.cvtColor(wall, cv2.COLOR_GRAY2BGR))).json() == {
        "faces": [],
        "width": 256,
        "height": 256,
    }
    jpeg = cv2.imencode(".jpg", cv2.imread(str(sample_path("astronaut"))))[1].tobytes()
    assert [f["label"] for f in post(client, jpeg, "face.jpg").json()["faces"]] == ["happy"]


def truncated_png() -> bytes:
    return ASTRONAUT[:2000]


BAD_INPUTS = {
    # name: (request keyword arguments, status, start of detail)
    "text": (dict(files={"file": ("a.txt", b"hello, world", "text/plain")}), 415, "not an image"),
    "corrupt png": (dict(files={"file": ("a.png", truncated_png(), "image/png")}), 415, "corrupt PNG file"),
    "empty file": (dict(files={"file": ("a.png", b"", "image/png")}), 415, "empty upload"),
    "pickle": (
        dict(files={"file": ("a.pkl", b"\x80\x04\x95\x05\x00.", "application/octet-stream")}),
        415,
        "not an image",
    ),
    "no file field": (dict(data={"image": "x"}), 422, "body.file: Field required"),
    "json body": (dict(json={"file": "/etc/passwd"}), 422, "body.file: Field required"),
    "bad tta": (
        dict(files={"file": ("a.png", ASTRONAUT, "image/png")}, params={"tta": "x"}),
        422,
        "query.tta",
    ),
    "too big": (
        dict(files={"file": ("a.png", b"\0" * 2 * MAX_UPLOAD, "image/png")}),
        413,
        "upload over 300,000",
    ),
    "too big, chunked": (dict(content=iter([b"\0" * 200_000] * 2)), 413, "upload over 300,000"),
    "too many pixels": (
        dict(files={"file": ("a.png", png(np.zeros((1001, 1000), np.uint8)), "image/png")}),
        413,
        "image of 1000x1001 pixels is over 1,000,000 pixels",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_the_server_keeps_serving(client, case):
    kwargs, status, detail = BAD_INPUTS[case]
    if case == "too big, chunked":  # no Content-Length: the middleware counts the body as it arrives
        kwargs = dict(kwargs, headers={"content-type": "multipart/form-data; boundary=x"})
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    message = response.json()["detail"]
    assert isinstance(message, str) and "\n" not in message and message.startswith(detail), message
    assert client.get("/health").json()["status"] == "ok"
    assert post(client, ASTRONAUT).json()["faces"][0]["label"] == "happy"


def test_upload_limit_applies_to_the_file_itself(recognizer):
    """Just under the body cap but over the file limit: refused by the file check."""
    with TestClient(serve.create_app(recognizer, max_upload=len(ASTRONAUT) - 1)) as c:
        response = post(c, ASTRONAUT)
    assert response.status_code == 413
    assert response.json()["detail"].startswith(f"image file of {len(ASTRONAUT):,} bytes is over")


@pytest.mark.parametrize(
    "shape, detail",
    [
        ((6_000, 10_000), "image of 10000x6000 pixels is over 50,000,000 pixels"),
        ((20_000, 20_000), "image over 50,000,000 pixels"),  # past Pillow's own bomb limit
    ],
)
def test_huge_images_are_refused_before_decoding(shape, detail):
    """A PNG of zeros is a few hundred kB on disk and up to 1.2 GB decoded."""
    bomb = png(np.zeros(shape, np.uint8))
    assert len(bomb) < 2_000_000
    with pytest.raises(serve.HTTPException) as err:
        serve.decode_image(bomb, max_pixels=serve.MAX_PIXELS)
    assert err.value.status_code == 413 and err.value.detail.startswith(detail)


def test_page_docs_and_assets_are_served_without_a_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert sorted(assets) == ["static/app.js", "static/style.css"]
    for text in [page.text] + [client.get(f"/{a}").text for a in assets]:
        assert not re.search(r"(?:src|href)=\"?(?:https?:)?//|https?://", text), (
            "a file the page loads is remote"
        )
    docs = client.get("/docs").text
    for asset in re.findall(r"/docs-assets/[\w.-]+", docs):
        assert client.get(asset).status_code == 200
    assert "cdn" not in docs.lower() and "/docs-assets/swagger-ui-bundle.js" in docs
    spec = client.get("/openapi.json").json()
    assert {"/health", "/predict"} <= set(spec["paths"])


def test_live_searches_faces_with_the_video_settings(recognizer):
    live = serve.video_recognizer(recognizer)
    assert live.backend is recognizer.backend and live.class_names == recognizer.class_names
    video = REALTIME_DETECTOR["yunet"]  # the default detector's video settings (emo.realtime's)
    assert (live.detector.max_side, live.detector.min_face) == (video["max_side"], video["min_face"])
    assert recognizer.detector.max_side == 640  # photos' settings stay with /predict
    stub = SlowRecognizer(delay=0.01)
    assert serve.video_recognizer(stub) is stub


def test_live_answers_each_frame_and_survives_bad_ones(client, recognizer):
    live = serve.video_recognizer(recognizer)
    expected = [f.as_dict() for f in live.predict(str(sample_path("astronaut")))]
    with client.websocket_connect("/live") as ws:
        ws.send_bytes(ASTRONAUT)
        first = ws.receive_json()
        assert first["faces"] == expected and (first["width"], first["height"], first["frame"]) == (
            256,
            256,
            1,
        )
        ws.send_bytes(b"not a jpeg")
        assert ws.receive_json()["error"].startswith("not an image")
        ws.send_text("hello")
        assert ws.receive_json()["error"].startswith("text message")
        ws.send_bytes(b"\0" * (MAX_UPLOAD + 1))
        assert "is over 300,000" in ws.receive_json()["error"]
        ws.send_bytes(ASTRONAUT)
        last = ws.receive_json()
        assert last["faces"] == expected and last["frame"] == 5 and last["dropped"] == 0
    assert client.get("/health").status_code == 200


def test_live_refuses_a_bad_tta(client):
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/live?tta=sideways") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 1008 and "sideways" in closed.value.reason


class SlowRecognizer:
    """Labels a frame by its pixel value; takes ``delay`` seconds, or waits for ``release``."""

    source, class_names = "stub", ["a", "b"]
    backend = type("Backend", (), {"name": "stub"})

    def __init__(self, delay: float = 0.0):
        self.delay, self.started, self.release = delay, threading.Event(), threading.Event()

    def predict(self, image, tta="none"):
        self.started.set()
        if self.delay:
            time.sleep(self.delay)
        else:
            assert self.release.wait(30)
        return [Face((0, 0, 1, 1), str(int(image[0, 0, 0])), {"a": 1.0, "b": 0.0})]


def test_live_latest_frame_wins():
    """Frames that arrive during a slow prediction replace each other: only the newest is answered."""
    with TestClient(serve.create_app(SlowRecognizer(delay=1.0))) as c, c.websocket_connect("/live") as ws:
        for value in range(1, 7):
            ws.send_bytes(png(np.full((8, 8), value, np.uint8)))
        first, second = ws.receive_json(), ws.receive_json()
    assert (first["frame"], first["faces"][0]["label"]) == (1, "1")
    assert (second["frame"], second["faces"][0]["label"], second["dropped"]) == (6, "6", 4)


def test_live_client_leaving_during_a_prediction():
    stub = SlowRecognizer(delay=0.5)
    with TestClient(serve.create_app(stub)) as c:
        with c.websocket_connect("/live") as ws:
            ws.send_bytes(png(np.full((8, 8), 1, np.uint8)))
            assert stub.started.wait(10)
        time.sleep(0.7)  # the answer to the gone client is dropped
        with c.websocket_connect("/live") as ws:
            ws.send_bytes(png(np.full((8, 8), 2, np.uint8)))
            assert ws.receive_json()["faces"][0]["label"] == "2"
        assert c.get("/health").status_code == 200


def test_health_answers_while_a_prediction_runs():
    stub = SlowRecognizer()
    with TestClient(serve.create_app(stub)) as c:
        result = {}
        worker = threading.Thread(target=lambda: result.update(r=post(c, png(np.full((8, 8), 3, np.uint8)))))
        worker.start()
        assert stub.started.wait(10)
        t0 = time.perf_counter()
        assert c.get("/health").json()["model"] == "stub"  # the prediction is still blocked
        waited = time.perf_counter() - t0
        stub.release.set()
        worker.join(10)
    assert waited < 2.0 and result["r"].json()["faces"][0]["label"] == "3"


def test_cli_defaults_and_detector_passing(monkeypatch):
    args = serve.parse_args([])
    assert (args.host, args.port, args.model, args.backend, args.detector) == (
        "127.0.0.1",
        8000,
        None,
        "auto",
        None,
    )
    assert args.max_upload_mb == 10 and args.max_pixels == serve.MAX_PIXELS
    seen = []
    monkeypatch.setattr(serve.EmotionRecognizer, "load", lambda model, **kw: seen.append((model, kw)))
    serve.load_recognizer("cnn3")
    serve.load_recognizer(None, "onnx", "yunet")
    assert seen == [("cnn3", {"backend": "auto"}), (None, {"backend": "onnx", "detector": "yunet"})]
    with pytest.raises(SystemExit):
        serve.parse_args(["--detector", "mtcnn"])
    with pytest.raises(SystemExit) as done:
        serve.cli(["--help"])
    assert done.value.code == 0


@pytest.mark.slow
def test_200_requests_from_8_clients_all_answered():
    """The real command line, on 127.0.0.1: 8 clients x 25 uploads, none lost, server alive."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "emo.inference.serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "emo-serve did not start within 2 minutes"
                time.sleep(0.5)

        def client(_: int) -> list[httpx.Response]:
            with httpx.Client(base_url=url, timeout=120) as c:
                return [c.post("/predict", files={"file": ("a.png", ASTRONAUT)}) for _ in range(25)]

        with ThreadPoolExecutor(8) as pool:
            answers = [r for rs in pool.map(client, range(8)) for r in rs]
        assert len(answers) == 200
        assert [r.status_code for r in answers] == [200] * 200
        assert {tuple(f["label"] for f in r.json()["faces"]) for r in answers} == {("happy",)}
        assert httpx.get(f"{url}/health").json()["status"] == "ok" and proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
