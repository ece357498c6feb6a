"""emo-serve: every endpoint and every kind of bad input, through FastAPI's TestClient."""

from __future__ import annotations

import io
import json
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from emo import weights  # noqa: E402
from emo.errors import EmoError  # noqa: E402
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


def post(client, data: bytes, name: str = "face.png", query: str = "", headers: dict | None = None):
    files = {"file": (name, data, "application/octet-stream")}
    return client.post(f"/predict{query}", files=files, headers=headers)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def pillow(mode: str, size: tuple[int, int], kind: str, frames: int = 1, **options) -> bytes:
    """A ``kind`` file (Pillow's format name) of ``frames`` frames in ``mode``, each a different grey."""
    pictures = [Image.new("L", size, 40 + 60 * i).convert(mode) for i in range(frames)]
    out = io.BytesIO()
    more = {"save_all": True, "append_images": pictures[1:]} if frames > 1 else {}
    pictures[0].save(out, kind, **more, **options)
    return out.getvalue()


def orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation; 6: rotated 90 degrees clockwise
    return exif


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds ten bytes of them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + chunk(b"IDAT", zlib.compress(bytes(10))) + chunk(b"IEND", b"")


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
    "corrupt png": (
        dict(files={"file": ("a.png", truncated_png(), "image/png")}),
        415,
        "corrupt or unsupported PNG file",
    ),
    "empty file": (dict(files={"file": ("a.png", b"", "image/png")}), 415, "empty file"),
    "no multipart boundary": (
        dict(content=b"x", headers={"content-type": "multipart/form-data"}),
        400,
        "Missing boundary",
    ),
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
    assert response.headers["content-type"] == "application/json"
    message = response.json()["detail"]
    assert isinstance(message, str) and "\n" not in message and message.startswith(detail), message
    assert client.get("/health").json()["status"] == "ok"
    assert post(client, ASTRONAUT).json()["faces"][0]["label"] == "happy"


#: Images that are unusual but fine: each is answered 200 with its size (width, height).
ODD_IMAGES = {
    "1x20000 png": (png(np.zeros((1, 20000), np.uint8)), (20000, 1)),
    "20000x1 png": (png(np.full((20000, 1), 200, np.uint8)), (1, 20000)),
    "2x4000 png": (png(np.zeros((2, 4000, 3), np.uint8)), (4000, 2)),
    "4000x2 png": (png(np.zeros((4000, 2, 3), np.uint8)), (2, 4000)),
    "1x1 png": (png(np.zeros((1, 1), np.uint8)), (1, 1)),
    "grey png": (pillow("L", (64, 48), "PNG"), (64, 48)),
    "grey+alpha png": (pillow("LA", (64, 48), "PNG"), (64, 48)),
    "palette png": (pillow("P", (64, 48), "PNG"), (64, 48)),
    "1-bit png": (pillow("1", (64, 48), "PNG"), (64, 48)),
    "16-bit png": (png(np.full((48, 64), 40_000, np.uint16)), (64, 48)),
    "16-bit colour png": (png(np.full((48, 64, 3), 40_000, np.uint16)), (64, 48)),
    "rgba png": (pillow("RGBA", (64, 48), "PNG"), (64, 48)),
    "animated png": (pillow("RGB", (64, 48), "PNG", frames=3), (64, 48)),
    "grey jpeg": (pillow("L", (64, 48), "JPEG"), (64, 48)),
    "cmyk jpeg": (pillow("CMYK", (64, 48), "JPEG"), (64, 48)),
    "1x20000 jpeg": (pillow("L", (1, 20000), "JPEG"), (1, 20000)),
    # EXIF orientation 6 (rotated 90 degrees): decoded upright, so 48x64
    "rotated jpeg": (pillow("RGB", (64, 48), "JPEG", exif=orientation(6)), (48, 64)),
    "gif": (pillow("P", (64, 48), "GIF"), (64, 48)),
    "animated gif": (pillow("P", (64, 48), "GIF", frames=3), (64, 48)),
    "webp": (pillow("RGB", (64, 48), "WEBP"), (64, 48)),
    "animated webp": (pillow("RGB", (64, 48), "WEBP", frames=3), (64, 48)),
    "bmp": (pillow("RGB", (64, 48), "BMP"), (64, 48)),
    "16-bit tiff": (pillow("I;16", (64, 48), "TIFF"), (64, 48)),
}

#: Files that are no image the server can use: (bytes, status, start of detail).
BAD_IMAGES = {
    "png header only": (ASTRONAUT[:33], 415, "not an image"),
    "png of 0x0 pixels": (png_header(0, 0), 415, "not an image"),
    "png claiming 60000x60000 in 80 bytes": (png_header(60_000, 60_000), 413, "image over 1,000,000 pixels"),
    "png claiming 2000x2000 in 80 bytes": (
        png_header(2000, 2000),
        413,
        "image of 2000x2000 pixels is over 1,000,000 pixels",
    ),
    "png without its pixels": (png_header(100, 100), 415, "corrupt or unsupported PNG file"),
    "jpeg cut in its header": (pillow("RGB", (640, 480), "JPEG")[:300], 415, "not an image"),
    "float tiff": (pillow("F", (64, 48), "TIFF"), 415, "corrupt or unsupported TIFF file"),
    "icon": (pillow("RGB", (64, 48), "ICO"), 415, "corrupt or unsupported ICO file"),
    "pdf": (pillow("RGB", (64, 48), "PDF"), 415, "not an image"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415, "not an image"),
}


@pytest.mark.parametrize("case", ODD_IMAGES)
def test_odd_images_are_classified(client, case):
    data, (width, height) = ODD_IMAGES[case]
    answer = post(client, data)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"faces": [], "width": width, "height": height}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_images_are_a_json_4xx(client, case):
    data, status, detail = BAD_IMAGES[case]
    response = post(client, data)
    assert response.status_code == status, response.text
    message = response.json()["detail"]
    assert "\n" not in message and message.startswith(detail) and message.endswith(("image", "downscale it"))


def test_live_answers_odd_and_bad_images_and_stays_open(client):
    """/live: the same answers as /predict, each frame on one connection that never drops."""
    with client.websocket_connect("/live") as ws:
        for data, (width, height) in ODD_IMAGES.values():
            ws.send_bytes(data)
            answer = ws.receive_json()
            assert (answer["faces"], answer["width"], answer["height"]) == ([], width, height), answer
        for data, _, detail in BAD_IMAGES.values():
            ws.send_bytes(data)
            assert ws.receive_json()["error"].startswith(detail)
        ws.send_bytes(ASTRONAUT)
        assert ws.receive_json()["faces"][0]["label"] == "happy"


def test_gif_and_webp_decode_where_opencv_cannot(monkeypatch):
    """OpenCV reads GIF and animated WebP from 4.11 on: before, Pillow decodes their first frame."""
    monkeypatch.setattr(serve.cv2, "imdecode", lambda *args: None)  # an OpenCV that reads neither
    for name in ("gif", "animated gif", "webp", "animated webp"):
        data, (width, height) = ODD_IMAGES[name]
        image = serve.decode_image(data)
        assert image.shape == (height, width, 3) and abs(int(image[0, 0, 0]) - 40) <= 2, name  # frame 1
    with pytest.raises(serve.HTTPException, match="corrupt or unsupported PNG file"):
        serve.decode_image(ODD_IMAGES["grey png"][0])  # the others still need OpenCV
    with pytest.raises(serve.HTTPException, match="corrupt or unsupported GIF file"):
        serve.decode_image(ODD_IMAGES["gif"][0][:-20])  # cut short


SMALL_FILES = [
    pillow(mode, (5, 3), kind)
    for kind, modes in {
        "PNG": "L RGB P",
        "JPEG": "L RGB",
        "GIF": "P",
        "WEBP": "RGB",
        "BMP": "RGB",
        "TIFF": "L",
    }.items()
    for mode in modes.split()
]


@st.composite
def damaged_files(draw) -> bytes:
    """A small image file with some bytes overwritten, cut short, or both; or random bytes."""
    data = bytearray(draw(st.sampled_from(SMALL_FILES)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.one_of(damaged_files(), st.binary(max_size=300)))
def test_decode_image_gives_an_image_or_a_4xx_for_any_bytes(data):
    """Whatever the bytes: BGR uint8 pixels, or HTTPException 413/415 with one line; nothing else."""
    try:
        image = serve.decode_image(data, max_pixels=MAX_PIXELS)
    except serve.HTTPException as err:
        assert err.status_code in (413, 415) and "\n" not in err.detail
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


class BrokenRecognizer(RecordingRecognizer):
    """Fails on every image, and to name its model, as a bug would."""

    def predict(self, image, tta=None):
        raise cv2.error("a bug")

    @property
    def source(self):
        raise AttributeError("another bug")


def test_a_failing_recognizer_is_a_json_500_and_live_stays_open(caplog):
    frame = png(np.full((8, 8), 1, np.uint8))
    with TestClient(serve.create_app(BrokenRecognizer()), raise_server_exceptions=False) as c:
        response = post(c, frame)
        with c.websocket_connect("/live") as ws:
            for _ in range(2):
                ws.send_bytes(frame)
                assert ws.receive_json()["error"].startswith("internal error while classifying")
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "internal error while classifying the image: see the server log"}
    assert "classifying a 8x8 image failed" in caplog.text and "a bug" in caplog.text  # the traceback
    with TestClient(serve.create_app(BrokenRecognizer()), raise_server_exceptions=False) as c:
        health = c.get("/health")  # any other bug: JSON too, not text/plain
    assert health.status_code == 500 and health.json() == {"detail": "internal error: see the server log"}


def test_openapi_lists_the_error_bodies_that_really_come(client):
    """Each error status /predict answers is in the schema, as {"detail": str}; 422's too."""
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "403", "408", "413", "415", "422", "500"}
    error = {"$ref": "#/components/schemas/ErrorDetail"}
    for status, answer in predict["responses"].items():
        schema = answer["content"]["application/json"]["schema"]
        assert schema == ({"$ref": "#/components/schemas/Prediction"} if status == "200" else error), status
    assert spec["components"]["schemas"]["ErrorDetail"]["properties"] == {
        "detail": {"type": "string", "title": "Detail"}
    }
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's 422, not what is sent
    # An empty file is not an image: the schema says so (minLength), the server answers 415.
    body = spec["components"]["schemas"]["Body_predict_predict_post"]["properties"]["file"]
    assert body["minLength"] == 1
    assert predict["requestBody"]["content"]["multipart/form-data"]["encoding"] == {
        "file": {"contentType": "image/*"}
    }
    for kwargs, _, _ in BAD_INPUTS.values():
        if "headers" not in kwargs:
            answer = client.post("/predict", **kwargs)
            assert str(answer.status_code) in predict["responses"] and set(answer.json()) == {"detail"}


EVIL = "https://evil.example"


def test_other_origins_are_refused_with_403(client):
    """A page of another site cannot make the server work; clients without Origin can."""
    for origin in (None, "http://testserver", "http://testserver:80", "HTTP://TestServer/"):
        headers = {"origin": origin} if origin else {}
        assert post(client, ASTRONAUT, headers=headers).status_code == 200, origin
        assert client.get("/health", headers=headers).status_code == 200
    for origin in (EVIL, "null", "https://testserver", "http://testserver:8000", "http://testserver.evil"):
        response = post(client, ASTRONAUT, headers={"origin": origin})
        assert response.status_code == 403, origin
        assert "access-control-allow-origin" not in response.headers
        detail = response.json()["detail"]
        assert detail.startswith(f"cross-origin request from {origin} refused") and "\n" not in detail
        allow = origin if origin != "null" else "'*' (any origin)"
        assert detail.endswith(f"start emo-serve with --allow-origin {allow}")
    assert client.get("/health", headers={"origin": EVIL}).status_code == 403


def test_live_closes_other_origins_with_1008(client):
    with client.websocket_connect("/live", headers={"origin": EVIL}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008 and "--allow-origin" in closed.value.reason
    with client.websocket_connect("/live", headers={"origin": "http://testserver"}) as ws:
        ws.send_bytes(ASTRONAUT)
        assert ws.receive_json()["faces"][0]["label"] == "happy"


def test_allowed_origins_get_cors_headers():
    stub, frame = RecordingRecognizer(), png(np.full((8, 8), 1, np.uint8))
    app = serve.create_app(stub, allow_origins=["https://app.example:443", "http://localhost:3000"])
    with TestClient(app) as c:
        answer = post(c, frame, headers={"origin": "https://app.example"})
        assert (
            answer.status_code == 200
            and answer.headers["access-control-allow-origin"] == "https://app.example"
        )
        preflight = c.options(
            "/predict", headers={"origin": "http://localhost:3000", "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert post(c, frame, headers={"origin": EVIL}).status_code == 403
        with c.websocket_connect("/live", headers={"origin": "http://localhost:3000"}) as ws:
            ws.send_bytes(frame)
            assert ws.receive_json()["faces"][0]["label"] == "a"
    with TestClient(serve.create_app(stub, allow_origins=["*"])) as c:
        answer = post(c, frame, headers={"origin": EVIL})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    for bad in (
        "evil.example",
        "ftp://evil.example",
        "https://evil.example/page",
        "https://evil.example:99999",
    ):
        with pytest.raises(EmoError, match="is not an origin: give scheme://host"):
            serve.create_app(stub, allow_origins=[bad])


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
    page = client.get("/server")  # the server-side page (/ is the on-device one: tests/test_web.py)
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


@contextmanager
def serving(app, timeout: float = serve.TIMEOUT):
    """``app`` on 127.0.0.1 (a free port) with emo-serve's uvicorn settings; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(serve.server_config(app, timeout=timeout, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def trickle(port: int, start: bytes, drip: bytes, every: float = 1.0, give_up: float = 20.0):
    """Send ``start``, then one byte of ``drip`` every ``every`` seconds until the server answers
    or closes; returns (what it sent back, seconds from connecting to the connection's end)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        t0, got = time.monotonic(), b""
        conn.sendall(start)
        for byte in drip:
            if select.select([conn], [], [], every)[0]:
                break  # an answer, or the end
            assert time.monotonic() - t0 < give_up, "the server never gave up on the trickle"
            conn.sendall(bytes([byte]))
        conn.settimeout(give_up)
        while chunk := conn.recv(65536):
            got += chunk
        return got, time.monotonic() - t0


def refused(raw: bytes, status: int) -> str:
    """The ``detail`` of a raw HTTP answer of ``status`` that closes the connection."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert b"connection: close" in head.lower() and b"content-type: application/json" in head.lower()
    return json.loads(body)["detail"]


TIMEOUT = 2.0  # --timeout of the socket tests below


@pytest.fixture(scope="module")
def port():
    """A real server with a slow stub (3 s an image) and a 2 s read deadline."""
    with serving(serve.create_app(SlowRecognizer(delay=TIMEOUT + 1)), timeout=TIMEOUT) as port:
        yield port


def test_trickled_headers_are_cut_off_at_the_timeout(port):
    """Slowloris: a header byte a second, never the blank line that ends them: 408 and closed."""
    answer, took = trickle(port, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 60)
    assert TIMEOUT - 0.1 < took < TIMEOUT + 1.5, took
    assert refused(answer, 408) == (
        "request not received in full within 2 s: send it faster, or start emo-serve with a longer --timeout"
    )


def test_a_trickled_body_is_cut_off_at_the_timeout(port):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    answer, took = trickle(port, head, b"-" * 1000)
    assert TIMEOUT - 0.1 < took < TIMEOUT + 1.5 and refused(answer, 408).startswith("request not received")


def test_an_endless_or_invalid_request_head_is_a_json_400(port):
    """Headers that go on past 16 KiB without their end (h11 buffers no more), or no HTTP at all."""
    endless = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
    for request in (endless, b"HELLO\r\n\r\n"):
        answer, took = trickle(port, request, b"")
        assert took < 1 and refused(answer, 400).startswith("invalid HTTP request: send HTTP/1.1")


def test_behind_a_proxy_the_forwarded_scheme_makes_the_origin(port):
    """A proxy on this machine that keeps Host and sets X-Forwarded-Proto: its HTTPS page is ours."""
    import httpx

    page = {"host": "emo.example", "origin": "https://emo.example"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        assert c.get("/health", headers={**page, "x-forwarded-proto": "https"}).status_code == 200
        assert c.get("/health", headers=page).status_code == 403  # an http server, an https page


@pytest.mark.slow
def test_timeout_spares_slow_answers_keep_alive_and_websockets(port):
    """The deadline is for receiving: a request answered after it is not cut, a keep-alive
    connection gets a new one after each answer, an idle one is closed quietly, a WebSocket
    once open is not timed."""
    import httpx
    from websockets.sync.client import connect

    frame = png(np.full((8, 8), 7, np.uint8))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        t0 = time.monotonic()
        answer = c.post("/predict", files={"file": ("a.png", frame)})  # 3 s to answer, 2 s deadline
        assert answer.json()["faces"][0]["label"] == "7" and time.monotonic() - t0 > TIMEOUT + 1
        time.sleep(TIMEOUT / 2)
        assert c.get("/health").status_code == 200  # the same connection, a new deadline
    with socket.create_connection(("127.0.0.1", port)) as conn:  # says nothing: closed, no answer
        t0 = time.monotonic()
        conn.settimeout(10)
        assert conn.recv(100) == b"" and TIMEOUT - 0.1 < time.monotonic() - t0 < TIMEOUT + 1.5
    with connect(f"ws://127.0.0.1:{port}/live", open_timeout=10) as ws:
        time.sleep(TIMEOUT + 0.5)
        ws.send(frame)
        assert json.loads(ws.recv(timeout=10))["faces"][0]["label"] == "7"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "70000"], "--port 70000 is not a port: choose one from 1 to 65535 (0: any free one)"),
        (["--port", "-1"], "--port -1 is not a port"),
        (["--timeout", "0"], "--timeout 0: give a number above 0"),
        (["--timeout", "nan"], "--timeout nan: give a number above 0"),
        (["--max-upload-mb", "-5"], "--max-upload-mb -5: give a number above 0"),
        (["--allow-origin", "evil.example"], "--allow-origin 'evil.example' is not an origin"),
    ],
)
def test_cli_refuses_bad_values_in_one_line_before_loading(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(serve, "load_recognizer", lambda *args: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as done:
        serve.cli(argv)
    assert done.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {message}"), line


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
    assert args.timeout == serve.TIMEOUT == 30 and args.allow_origin == []
    assert serve.parse_args(["--allow-origin", "*", "--allow-origin", "https://a.example"]).allow_origin == [
        "*",
        "https://a.example",
    ]
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


@pytest.mark.slow
def test_the_command_line_on_any_free_port_as_a_user_meets_it():
    """emo-serve --port 0 --timeout 2 --allow-origin ...: the odd image, the empty file, another
    site's POST, an allowed one and a trickling socket, as curl and a browser would send them."""
    import httpx

    cmd = [sys.executable, "-m", "emo.inference.serve", "--port", "0", "--timeout", "2"]
    cmd += ["--allow-origin", "https://app.example"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not (
            found := [m for line in lines if (m := re.search(r"running on http://127.0.0.1:(\d+)", line))]
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        port = int(found[0][1])
        assert "on a free port of 127.0.0.1" in lines[0]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:

            def upload(data: bytes, **headers: str) -> httpx.Response:
                return c.post("/predict", files={"file": ("a.png", data)}, headers=headers)

            assert upload(png(np.zeros((1, 20000), np.uint8))).json() == {
                "faces": [],
                "width": 20000,
                "height": 1,
            }
            assert upload(b"").status_code == 415 and upload(b"").json()["detail"].startswith("empty file")
            evil = upload(ASTRONAUT, origin=EVIL)
            assert evil.status_code == 403 and evil.json()["detail"].startswith(
                f"cross-origin request from {EVIL}"
            )
            page = upload(ASTRONAUT, origin=f"http://127.0.0.1:{port}")  # the server's own page
            assert page.json()["faces"][0]["label"] == "happy"
            app = upload(ASTRONAUT, origin="https://app.example")
            assert (
                app.status_code == 200 and app.headers["access-control-allow-origin"] == "https://app.example"
            )
        answer, took = trickle(port, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 60)
        assert took < 3.5 and refused(answer, 408).startswith("request not received in full within 2 s")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    reader.join(10)
    assert "Traceback" not in "".join(lines), "".join(lines)
