"""emo over HTTP: a JSON API, a WebSocket for live frames and a webcam page (FastAPI + uvicorn).

    emo-serve                                      # http://127.0.0.1:8000: the page; /docs: the API
    emo-serve --model cnn3 --backend onnx --port 8080
    curl -F file=@photo.jpg http://127.0.0.1:8000/predict     # the model's recorded TTA
    curl -F file=@photo.jpg 'http://127.0.0.1:8000/predict?tta=none'

- ``GET /health``: ``{"status": "ok", "model", "backend", "classes"}``.
- ``POST /predict`` (multipart field ``file``, query ``tta=none|flip|tencrop``; without ``tta``:
  the model's recorded TTA, ``flip`` for the bundled models):
  ``{"faces": [{"box": [x, y, w, h], "label", "scores": {class: p}}], "width", "height"}``.
- ``WS /live?tta=``: binary JPEG/PNG frames in (faces searched for as ``emo.realtime`` does in
  video: 80 px and up; without ``tta``: ``none``, for speed, as in ``emo.realtime``); each frame
  processed is answered with the same JSON plus ``frame`` (its number on this connection),
  ``dropped`` (frames overwritten so far) and ``ms``. Latest frame wins: a frame that arrives
  while the previous one is being classified replaces any frame still waiting, so a slow client
  never builds a queue.
- ``GET /``: the webcam page (``static/``); ``/docs``: the OpenAPI docs, with Swagger UI served
  from the ``fastapi-offline`` wheel. Nothing comes from a CDN: it all works offline.

Bad input is answered with one-line ``detail``: not an image or a corrupt one: 415; a missing
field or bad ``tta``: 422; an upload over ``--max-upload-mb``: 413; an image over
``--max-pixels``: 413. Big images are refused, not downscaled: the client knows how it wants to
shrink its photo, and the detector works on a <= 640 px copy anyway. The image size is read from
the file header (Pillow, no decoding) before OpenCV decodes it, so a small file that would
decode to gigabytes is refused first. The server binds 127.0.0.1 unless ``--host`` says
otherwise, never reads a path a client sends and never unpickles what it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from emo import __version__
from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import BACKENDS
from emo.inference.detect import DETECTORS, make_detector
from emo.inference.images import MAX_PIXELS
from emo.inference.preprocess import TTA_MODES
from emo.inference.realtime import REALTIME_DETECTOR
from emo.inference.recognizer import EmotionRecognizer

try:  # the serve extra is optional: cli() names what is missing
    import uvicorn
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile, WebSocket
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline
    from starlette.websockets import WebSocketDisconnect
except ImportError as err:
    MISSING: str | None = err.name
else:
    MISSING = None

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Default upload limit (bytes): a 12 MP phone JPEG is 3-6 MB.
MAX_UPLOAD = 10 * 1024 * 1024
#: Room for the multipart headers around the file, when the whole body is capped.
MULTIPART_SLACK = 64 * 1024
Tta = Literal["none", "flip", "tencrop"]
assert Tta.__args__ == TTA_MODES  # one list of TTA modes (emo.models.module)


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> BGR uint8 (H, W, 3), refusing non-images and images over ``max_pixels``.

    Raises:
        HTTPException: 415 for a non-image or corrupt one, 413 for too many pixels.
    """
    formats = "send a JPEG, PNG, BMP or WebP image"
    if not data:
        raise HTTPException(415, f"empty upload: {formats}")
    try:
        with warnings.catch_warnings():  # Pillow warns above 89 M pixels; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image over {max_pixels:,} pixels: downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise HTTPException(415, f"not an image: {formats}") from None
    if width * height > max_pixels:
        raise HTTPException(
            413, f"image of {width}x{height} pixels is over {max_pixels:,} pixels: downscale it"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise HTTPException(415, f"corrupt {header.format or 'image'} file: {formats}")
    return image


class BodyLimit:
    """ASGI middleware: 413 for an HTTP body over ``max_body`` bytes, before it is all read."""

    def __init__(self, app: Any, max_body: int):
        self.app, self.max_body = app, max_body
        self.detail = f"upload over {max_body - MULTIPART_SLACK:,} bytes: send a smaller image"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await JSONResponse({"detail": self.detail}, 413)(scope, receive, send)
        seen = 0

        async def counted():  # a chunked upload names no length: count what arrives
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)


def video_recognizer(recognizer: EmotionRecognizer) -> EmotionRecognizer:
    """``recognizer``'s network with ``emo.realtime``'s face search for video frames.

    A webcam face is 100-250 px, so /live searches a <= 320 px copy of each frame
    (``REALTIME_DETECTOR``), a fraction of the photo settings' cost (<= 640 px copy), which
    /predict keeps. Its default TTA is ``none``, for speed, as ``emo.realtime``'s.
    """
    name = next(
        (n for n, cls in DETECTORS.items() if type(getattr(recognizer, "detector", None)) is cls), None
    )
    if name is None:
        return recognizer  # a detector of the caller's own: its settings serve both
    detector = make_detector(name, **{**REALTIME_DETECTOR[name], "framing": recognizer.detector.framing})
    r = recognizer
    return EmotionRecognizer(r.backend, r.class_names, r.preprocess, detector, r.source, tta="none")


def create_app(
    recognizer: EmotionRecognizer,
    max_upload: int = MAX_UPLOAD,
    max_pixels: int = MAX_PIXELS,
    live_recognizer: EmotionRecognizer | None = None,
) -> FastAPI:
    """The FastAPI app serving ``recognizer`` (see the module docstring for the endpoints).

    Args:
        recognizer: what classifies; loaded once, shared by every request.
        max_upload: largest accepted image file (bytes), for ``/predict`` and each ``/live`` frame.
        max_pixels: largest accepted image (width x height).
        live_recognizer: what classifies ``/live`` frames; default: ``video_recognizer(recognizer)``.
    """
    if MISSING:
        raise EmoError(f"emo-serve needs the serve extra ({MISSING} is missing): pip install 'emo[serve]'")
    # One inference thread: torch and OpenCV already spread one prediction over every core, and
    # OpenCV's cascade object is not documented as thread-safe. The event loop stays free, so
    # /health and the page answer while predictions run.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emo-infer")

    live_recognizer = live_recognizer or video_recognizer(recognizer)

    def predict_bytes(data: bytes, tta: str | None, model: EmotionRecognizer) -> dict[str, Any]:
        image = decode_image(data, max_pixels)
        faces = model.predict(image, tta=tta)
        return {"faces": [f.as_dict() for f in faces], "width": image.shape[1], "height": image.shape[0]}

    async def run(data: bytes, tta: str | None, model: EmotionRecognizer = recognizer) -> dict[str, Any]:
        if len(data) > max_upload:
            raise HTTPException(
                413, f"image file of {len(data):,} bytes is over {max_upload:,}: send a smaller one"
            )
        return await asyncio.get_running_loop().run_in_executor(pool, predict_bytes, data, tta, model)

    # FastAPIOffline: FastAPI whose /docs page loads Swagger UI (5.x: OpenAPI 3.1) from its wheel.
    app = FastAPIOffline(
        title="emo",
        summary="Facial-expression recognition: faces and the probability of each emotion.",
        version=__version__,
        redoc_url=None,
        static_url="/docs-assets",
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"])
            hint = " (POST the image as the multipart/form-data field 'file')" if where == "body.file" else ""
            problems.append(f"{where}: {e['msg']}{hint}")
        return JSONResponse({"detail": "; ".join(problems)}, 422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The model being served and its classes."""
        return {
            "status": "ok",
            "model": recognizer.source,
            "backend": recognizer.backend.name,
            "classes": recognizer.class_names,
        }

    @app.post(
        "/predict",
        responses={413: {"description": "file or image too large"}, 415: {"description": "not an image"}},
    )
    async def predict(
        file: Annotated[UploadFile, File(description="an image: JPEG, PNG, BMP, WebP, ...")],
        tta: Annotated[
            Tta | None,
            Query(description="test-time augmentation (default: the model's recorded TTA)"),
        ] = None,
    ) -> dict[str, Any]:
        """The faces of an image: box (x, y, w, h), label and a probability per class, largest first."""
        # tta None: the recognizer's own default (a bundled model's recorded TTA).
        return await run(await file.read(max_upload + 1), tta)

    @app.websocket("/live")
    async def live(ws: WebSocket, tta: str = "none") -> None:
        # Live frames default to no TTA, for speed (as emo.realtime), not to the recorded one.
        await ws.accept()
        if tta not in TTA_MODES:
            await ws.close(code=1008, reason=f"tta={tta!r}: choose one of {', '.join(TTA_MODES)}")
            return
        # The newest frame not yet classified; the receiver overwrites it, the worker takes it.
        state: dict[str, Any] = {"frame": None, "n": 0, "dropped": 0, "closed": False}
        ready = asyncio.Event()

        async def receive() -> None:
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    state["n"] += 1
                    state["dropped"] += state["frame"] is not None
                    state["frame"] = (state["n"], message.get("bytes"))
                    ready.set()
            finally:
                state["closed"] = True
                ready.set()

        receiver = asyncio.create_task(receive())
        try:
            while True:
                await ready.wait()
                ready.clear()
                if state["closed"]:
                    break
                if state["frame"] is None:
                    continue
                (n, data), state["frame"] = state["frame"], None
                start = time.perf_counter()
                try:
                    if data is None:
                        raise HTTPException(415, "text message: send frames as binary JPEG or PNG messages")
                    answer = await run(data, tta, live_recognizer)
                except HTTPException as err:
                    answer = {"error": err.detail}
                answer.update(
                    frame=n, dropped=state["dropped"], ms=round(1e3 * (time.perf_counter() - start), 1)
                )
                await ws.send_json(answer)
        except (WebSocketDisconnect, RuntimeError, OSError):  # the client left while we answered
            pass
        finally:
            receiver.cancel()

    app.add_middleware(BodyLimit, max_body=max_upload + MULTIPART_SLACK)
    return app


def load_recognizer(model: str | None = None, backend: str = "auto", detector: str | None = None):
    """The recognizer ``emo-serve`` serves: a bundled name, a ``.ckpt``/``.onnx`` file or a run dir."""
    # detector= is passed only when asked for, so the recognizer's own default stays the default.
    extra = {"detector": detector} if detector else {}
    return EmotionRecognizer.load(model, backend=backend, **extra)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog("emo-serve"), description="emo over HTTP: a webcam page, a JSON API and a live WebSocket."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--model", default=None, help="bundled name, .ckpt/.onnx file or run dir (default: best bundled)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference engine (default auto: a bundled model's recorded one, onnxruntime for .onnx, torch for .ckpt)",
    )
    parser.add_argument(
        "--detector", choices=list(DETECTORS), default=None, help="face detector (default: the recognizer's)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=MAX_UPLOAD / 2**20, help="largest image file (default: 10)"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"largest image, w x h (default: {MAX_PIXELS:,})"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser.parse_args(argv)


@exit_on_emo_error
def cli(argv: list[str] | None = None) -> None:
    """``emo-serve``: load the model once, then serve until Ctrl-C."""
    args = parse_args(argv)
    if MISSING:
        raise EmoError(f"emo-serve needs the serve extra ({MISSING} is missing): pip install 'emo[serve]'")
    recognizer = load_recognizer(args.model, args.backend, args.detector)
    recognizer.probs([np.zeros((48, 48), np.uint8)])  # warm up, so the first request is not the slow one
    max_upload = int(args.max_upload_mb * 2**20)
    app = create_app(recognizer, max_upload=max_upload, max_pixels=args.max_pixels)
    print(f"emo-serve: {recognizer!r} on http://{args.host}:{args.port}/ (API docs: /docs)", flush=True)
    # Frames up to twice the limit are read and answered {"error": ...}; bigger ones are cut off
    # by the WebSocket layer itself (close code 1009), so nobody can make the server buffer more.
    ws_max = 2 * max_upload
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws_max_size=ws_max)


if __name__ == "__main__":
    cli()
