"""emo over HTTP: the on-device page, a JSON API, a WebSocket for live frames and the server-side
webcam page (FastAPI + uvicorn).

    emo-serve                                      # http://127.0.0.1:8000: the page; /docs: the API
    emo-serve --model cnn3 --backend onnx --port 8080
    emo-serve --host 0.0.0.0 --https               # a phone on the LAN (browsers want https for a camera)
    curl -F file=@photo.jpg http://127.0.0.1:8000/predict     # the model's recorded TTA
    curl -F file=@photo.jpg 'http://127.0.0.1:8000/predict?tta=none'

- ``GET /health``: ``{"status": "ok", "model", "backend", "classes"}``.
- ``POST /predict`` (multipart field ``file``, query ``tta=none|flip|tencrop``; without ``tta``:
  the model's recorded TTA, ``flip`` for the bundled models):
  ``{"faces": [{"box": [x, y, w, h], "label", "scores": {class: p}}], "width", "height"}``.
- ``WS /live?tta=``: binary JPEG/PNG frames in (faces searched for as ``emo.realtime`` does in
  video: from 40 px with YuNet, 80 px with Haar; without ``tta``: ``none``, for speed, as in ``emo.realtime``); each frame
  processed is answered with the same JSON plus ``frame`` (its number on this connection),
  ``dropped`` (frames overwritten so far) and ``ms``. Latest frame wins: a frame that arrives
  while the previous one is being classified replaces any frame still waiting, so a slow client
  never builds a queue.
- ``GET /``: the on-device page (``emo.inference.webapp``: the camera, YuNet and the default or
  fast model run in the browser, and no frame reaches this server), with its runtime, models,
  ``config.json`` and service worker beside it; ``/server``: the server-side webcam page
  (``static/``: frames go to ``/live``, photos to ``/predict``); ``/docs``: the OpenAPI docs, with
  Swagger UI served from the ``fastapi-offline`` wheel. Nothing comes from a CDN: it all works
  offline. Where onnxruntime-web is missing (a checkout without ``make web``), ``/`` is the
  server-side page and the log says how to get the other.

Every error is JSON ``{"detail": "<one line: the problem and the fix>"}``, as the OpenAPI schema
(``/openapi.json``) says: not an image (an empty or corrupt file, or a kind of image OpenCV
cannot decode): 415; a missing field or bad ``tta``: 422; a body the multipart parser cannot read:
400; an upload over ``--max-upload-mb`` or an image over ``--max-pixels``: 413; a cross-origin
request from an origin not allowed (``--allow-origin``): 403; a request not received in full
within ``--timeout`` seconds: 408. On ``/live`` a bad frame is answered ``{"error": ...}`` and the
connection stays open. Big images are refused, not downscaled: the client knows how it wants to
shrink its photo, and the detector works on a <= 640 px copy anyway. The image size is read from
the file header (Pillow, no decoding) before OpenCV decodes it, so a small file that would
decode to gigabytes is refused first. The server binds 127.0.0.1 unless ``--host`` says
otherwise, refuses requests from other sites' pages unless ``--allow-origin`` names them, never
reads a path a client sends and never unpickles what it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import cv2
import numpy as np
from PIL import Image

from emo import __version__, weights
from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import BACKENDS
from emo.inference.detect import DETECTORS, make_detector
from emo.inference.images import MAX_PIXELS
from emo.inference.preprocess import TTA_MODES
from emo.inference.realtime import REALTIME_DETECTOR
from emo.inference.recognizer import EmotionRecognizer
from emo.inference.webapp import WEB_MODELS, site

try:  # the serve extra is optional: cli() names what is missing
    import uvicorn
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile, WebSocket
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel
    from starlette.datastructures import Headers
    from starlette.middleware.cors import CORSMiddleware
    from starlette.websockets import WebSocketDisconnect
except ImportError as err:
    MISSING: str | None = err.name
else:
    MISSING = None

log = logging.getLogger("emo.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Default upload limit (bytes): a 12 MP phone JPEG is 3-6 MB.
MAX_UPLOAD = 10 * 1024 * 1024
#: Room for the multipart headers around the file, when the whole body is capped.
MULTIPART_SLACK = 64 * 1024
#: Default ``--timeout`` (seconds): the time a client has to send one request, headers and body
#: (a 10 MB upload needs ~3 Mbit/s); idle keep-alive connections are closed after 5 s anyway.
TIMEOUT = 30.0
#: Largest request head still unfinished (request line and headers, bytes): h11 answers 400 past it.
MAX_HEAD = 16 * 1024
Tta = Literal["none", "flip", "tencrop"]
assert Tta.__args__ == TTA_MODES  # one list of TTA modes (emo.models.module)
#: What the client should send instead, in every "not an image" answer.
FORMATS = "send a JPEG, PNG, BMP or WebP image"
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Content types of the on-device page's files (a module script must be served as JavaScript).
WEB_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: Files a browser must ask for again each visit (they name everything else).
WEB_REVALIDATE = {"", "index.html", "sw.js", "config.json"}


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> BGR uint8 (H, W, 3), refusing non-images and images over ``max_pixels``.

    Any file at all gets an image or an ``HTTPException``, never another exception: the header is
    read by Pillow (whatever it raises on a malformed one means "not an image"), the pixels are
    decoded by OpenCV (grey, 16-bit, CMYK and palette images become 8-bit BGR; an animation gives
    its first frame; EXIF orientation is applied; Pillow decodes the GIF and WebP files an older
    OpenCV cannot), and the decoded size is checked again.

    Raises:
        HTTPException: 415 for a non-image or corrupt one, 413 for too many pixels.
    """
    if not data:
        raise HTTPException(415, f"empty file: {FORMATS}")
    # Pillow refuses headers over twice its own bomb limit itself: the smaller limit is the real one.
    limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
    try:
        # Pillow warns above 89 M pixels and about malformed metadata: the checks below decide.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                (width, height), kind = header.size, header.format or "image"
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image over {limit:,} pixels: downscale it") from None
    except Exception:  # a malformed header can raise anything from Pillow's parsers
        raise HTTPException(415, f"not an image: {FORMATS}") from None
    if width < 1 or height < 1:
        raise HTTPException(415, f"{kind} image of {width}x{height} pixels has no pixels: {FORMATS}")
    if width * height > limit:
        raise HTTPException(413, f"image of {width}x{height} pixels is over {limit:,} pixels: downscale it")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None and kind in ("GIF", "WEBP"):  # OpenCV before 4.11: no GIF, no animated WebP
        image = first_frame(data)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise HTTPException(415, f"corrupt or unsupported {kind} file: {FORMATS}")
    if image.shape[0] * image.shape[1] > limit:  # OpenCV read another size than Pillow's header
        raise HTTPException(
            413, f"image of {image.shape[1]}x{image.shape[0]} pixels is over {limit:,} pixels: downscale it"
        )
    return image


def first_frame(data: bytes) -> np.ndarray | None:
    """A GIF's or WebP's first frame as BGR uint8, decoded by Pillow; None if it cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=["GIF", "WEBP"]) as picture:
                rgb = np.asarray(picture.convert("RGB"))
    except Exception:  # as in decode_image: whatever a malformed file raises means "corrupt"
        return None
    return np.ascontiguousarray(rgb[..., ::-1])


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


def parse_origin(text: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` as (scheme, host, port), the port filled in; None if it is not one."""
    try:
        url = urlsplit(text.strip())
        port = url.port
    except ValueError:  # a port out of range or not a number
        return None
    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url.hostname or url.path not in ("", "/"):
        return None
    if url.query or url.fragment or url.username is not None:
        return None
    return scheme, url.hostname.lower(), port or DEFAULT_PORTS[scheme]


def origin_text(origin: tuple[str, str, int]) -> str:
    """An origin as browsers send it in ``Origin``: no default port, IPv6 hosts in brackets."""
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == DEFAULT_PORTS[scheme] else f":{port}")


def allowed_origins(origins: Iterable[str]) -> list[str]:
    """``--allow-origin`` values checked and written as browsers write them (``*``: any origin).

    Raises:
        EmoError: a value that is not ``*`` nor ``http(s)://host[:port]``.
    """
    out = []
    for text in origins:
        origin = "*" if text.strip() == "*" else parse_origin(text)
        if origin is None:
            raise EmoError(
                f"--allow-origin {text!r} is not an origin: give scheme://host[:port], "
                "e.g. https://app.example.com, or * for any"
            )
        out.append(origin if origin == "*" else origin_text(origin))
    return out


class OriginCheck:
    """ASGI middleware: refuses requests that a page of another site sent through a browser.

    Browsers name the page's origin in the ``Origin`` header of cross-origin requests (and of
    POSTs and WebSockets). A request whose ``Origin`` is neither the server's own (its scheme and
    the ``Host`` the client addressed) nor one of ``allow`` gets 403, or, for a WebSocket, is
    closed with code 1008 (policy violation). Requests without ``Origin`` (curl, Python clients,
    the browser's own navigation) pass: the check protects browsers, it is not authentication.
    """

    def __init__(self, app: Any, allow: Iterable[str] = ()):
        allow = list(allow)
        self.app, self.any = app, "*" in allow
        self.allow = {parse_origin(o) for o in allow if o != "*"}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.any:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            return await self.app(scope, receive, send)
        parsed = parse_origin(origin)
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        host = headers.get("host")
        own = parse_origin(f"{scheme}://{host}") if host else None
        if parsed is not None and (parsed == own or parsed in self.allow):
            return await self.app(scope, receive, send)
        shown = origin[:100]
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            reason = "origin not allowed: start emo-serve with --allow-origin ORIGIN"
            return await send({"type": "websocket.close", "code": 1008, "reason": reason})
        allow = origin_text(parsed) if parsed else "'*' (any origin)"  # file:// pages send "null"
        detail = (
            f"cross-origin request from {shown} refused: open the page from this server, "
            f"or start emo-serve with --allow-origin {allow}"
        )
        await JSONResponse({"detail": detail}, 403)(scope, receive, send)


def refusal(status: int, phrase: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON ``detail``, closing the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def timed_protocol(timeout: float = TIMEOUT) -> type:
    """uvicorn's h11 HTTP protocol with a read deadline: each request must arrive in full.

    uvicorn times out only idle keep-alive connections (``timeout_keep_alive``), after a response:
    a client that trickles a header byte a second, or a body byte, holds its connection forever.
    Here a connection has ``timeout`` seconds from its start, and from the end of each response,
    to deliver the next request in full, headers and body; a request still incomplete then is
    answered 408 and the connection closed. The time the server then takes to answer does not
    count. h11, not httptools: h11 refuses a request head still unfinished past ``MAX_HEAD`` (400),
    httptools buffers any amount of headers. A WebSocket leaves the deadline behind once upgraded.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    too_slow = refusal(
        408,
        "Request Timeout",
        f"request not received in full within {timeout:g} s: send it faster, "
        "or start emo-serve with a longer --timeout",
    )
    bad = refusal(
        400,
        "Bad Request",
        f"invalid HTTP request: send HTTP/1.1 with a request line and headers under {MAX_HEAD // 1024} KiB",
    )

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _received = 0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._received = 0
            self._deadline = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def data_received(self, data: bytes) -> None:
            self._received += len(data)
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's turn

        def handle_websocket_upgrade(self, event) -> None:
            self._disarm()  # the WebSocket has its own pings
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:  # uvicorn's is text/plain
            self._disarm()
            self.transport.write(bad)
            self.transport.close()

        def _expire(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if self.transport.is_closing():
                return
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                return  # the request arrived in full: it is being answered, then the deadline restarts
            # Nobody is answering what was sent (no request yet, or a body still incomplete):
            # 408, unless the client sent nothing or an answer is already going out.
            reading = cycle is None or not cycle.response_started or not cycle.more_body
            if self._received and reading:
                client = "{}:{}".format(*self.client) if self.client else "a client"
                self.logger.info("%s: request not received in full within %gs: 408", client, timeout)
                self.transport.write(too_slow)
            self.transport.close()

    return TimedH11Protocol


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


if not MISSING:  # the OpenAPI schema's models (pydantic comes with FastAPI)

    class ErrorDetail(BaseModel):
        """Every error answer: one line naming the problem and the fix."""

        detail: str

    class FaceOut(BaseModel):
        box: list[int]
        label: str
        scores: dict[str, float]

    class Prediction(BaseModel):
        faces: list[FaceOut]
        width: int
        height: int

    class Health(BaseModel):
        status: str
        model: str
        backend: str
        classes: list[str]


#: The error answers, as the OpenAPI schema lists them (each ``{"detail": str}``).
ERRORS = {
    400: "the body is not a multipart form that can be parsed (a missing boundary, for example)",
    403: "a cross-origin request from an origin not allowed (emo-serve --allow-origin)",
    408: "the request did not arrive in full within emo-serve --timeout seconds",
    413: "the upload is over --max-upload-mb, or the image over --max-pixels",
    415: "not an image: an empty or corrupt file, or a kind of image OpenCV cannot decode",
    422: "no multipart field `file`, or a bad `tta`",
    500: "a bug: the server log has the traceback",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorDetail, "description": ERRORS[status]} for status in statuses}


def create_app(
    recognizer: EmotionRecognizer,
    max_upload: int = MAX_UPLOAD,
    max_pixels: int = MAX_PIXELS,
    live_recognizer: EmotionRecognizer | None = None,
    allow_origins: Iterable[str] = (),
    web_models: Iterable[str] | None = WEB_MODELS,
) -> FastAPI:
    """The FastAPI app serving ``recognizer`` (see the module docstring for the endpoints).

    Args:
        recognizer: what classifies; loaded once, shared by every request.
        max_upload: largest accepted image file (bytes), for ``/predict`` and each ``/live`` frame.
        max_pixels: largest accepted image (width x height).
        live_recognizer: what classifies ``/live`` frames; default: ``video_recognizer(recognizer)``.
        allow_origins: origins (``https://host[:port]``, or ``*`` for any) whose pages may call the
            API from a browser, besides the server's own; they get CORS headers.
        web_models: the models the on-device page at ``/`` offers (bundled names or purposes);
            ``None``: no on-device page (``/`` is the server-side page).

    Raises:
        EmoError: the serve extra is missing, or an origin is malformed.
    """
    if MISSING:
        raise EmoError(f"emo-serve needs the serve extra ({MISSING} is missing): pip install 'emo[serve]'")
    allow_origins = allowed_origins(allow_origins)
    # One inference thread: torch and OpenCV already spread one prediction over every core, and
    # OpenCV's cascade object is not documented as thread-safe. The event loop stays free, so
    # /health and the page answer while predictions run.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emo-infer")

    live_recognizer = live_recognizer or video_recognizer(recognizer)

    def predict_bytes(data: bytes, tta: str | None, model: EmotionRecognizer) -> dict[str, Any]:
        image = decode_image(data, max_pixels)
        try:
            faces = model.predict(image, tta=tta)
        except Exception:  # a bug, not the client's: logged, and answered in JSON all the same
            log.exception("classifying a %dx%d image failed", image.shape[1], image.shape[0])
            raise HTTPException(
                500, "internal error while classifying the image: see the server log"
            ) from None
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
        return JSONResponse({"detail": " ".join("; ".join(problems).split())}, 422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:  # JSON, not text/plain
        return JSONResponse({"detail": "internal error: see the server log"}, 500)

    @app.get("/server", response_class=HTMLResponse, include_in_schema=False)
    async def server_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    web = None
    if web_models is not None:
        try:
            web = site(list(web_models), server=True)
        except EmoError as err:
            log.warning("no on-device page at / (the server-side page is there instead): %s", err)
    if web is None:
        app.add_api_route(
            "/", server_page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False
        )
    else:
        for key, value in {"": web["index.html"], **web}.items():
            app.add_api_route(
                f"/{key}", web_file(key, value), methods=["GET", "HEAD"], include_in_schema=False
            )

    @app.get("/health", response_model=Health, responses=error_responses(403, 408))
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
        response_model=Prediction,
        responses=error_responses(400, 403, 408, 413, 415, 422, 500),
        # The file part is an image (any kind Pillow and OpenCV read; the server sniffs the bytes,
        # the part's own Content-Type is not checked).
        openapi_extra={
            "requestBody": {
                "content": {"multipart/form-data": {"encoding": {"file": {"contentType": "image/*"}}}}
            }
        },
    )
    async def predict(
        file: Annotated[
            UploadFile,
            # minLength: an empty file is not an image (refused with 415, as any other non-image).
            File(description="an image: JPEG, PNG, BMP, WebP, ...", json_schema_extra={"minLength": 1}),
        ],
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
            reason = f"tta={tta[:40]!r}: choose one of {', '.join(TTA_MODES)}"
            await ws.close(code=1008, reason=reason.encode()[:123].decode(errors="ignore"))  # the cap
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

    # Outermost last: the origin check, then CORS headers for the origins allowed, then the body cap.
    app.add_middleware(BodyLimit, max_body=max_upload + MULTIPART_SLACK)
    if allow_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=allow_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    app.add_middleware(OriginCheck, allow=allow_origins)
    return app


def page_models(recognizer: EmotionRecognizer) -> list[str]:
    """The models the on-device page offers: the served one first where it is a bundled model
    (``--model vgg_s_kd``), then the default and the fast one."""
    source = recognizer.source
    first = [p for p in WEB_MODELS if weights.resolve_name(p) == source]  # by its purpose's name
    if not first and source in weights.available():
        first = [source]
    return list(dict.fromkeys([*first, *WEB_MODELS]))


def web_file(key: str, value: Path | bytes) -> Any:
    """A route answering one file of the on-device page."""
    media_type = WEB_TYPES.get(Path(key or "index.html").suffix, "application/octet-stream")
    headers = {"Cache-Control": "no-cache"} if key in WEB_REVALIDATE else {}

    async def answer() -> Response:
        if isinstance(value, bytes):
            return Response(value, media_type=media_type, headers=headers)
        return FileResponse(value, media_type=media_type, headers=headers)

    return answer


def server_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    timeout: float = TIMEOUT,
    max_upload: int = MAX_UPLOAD,
    log_level: str = "info",
    tls: tuple[str | Path, str | Path] | None = None,
) -> uvicorn.Config:
    """uvicorn's settings for ``app``: the read deadline (``timed_protocol``), the WebSocket cap
    and, with ``tls`` (certificate, key), https."""
    # Frames up to twice the limit are read and answered {"error": ...}; bigger ones are cut off
    # by the WebSocket layer itself (close code 1009), so nobody can make the server buffer more.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=timed_protocol(timeout),
        h11_max_incomplete_event_size=MAX_HEAD,
        ws_max_size=2 * max_upload,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )


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
    parser.add_argument(
        "--port", type=int, default=8000, help="port, 1-65535, 0: any free one (default: 8000)"
    )
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
        "--timeout",
        type=float,
        default=TIMEOUT,
        help=f"seconds a client has to send a request, headers and body (default: {TIMEOUT:g})",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also answer browser pages from ORIGIN (https://host[:port]; repeatable; * for any); "
        "default: only the server's own pages",
    )
    parser.add_argument(
        "--https",
        action="store_true",
        help="serve over https, which a phone's browser needs to open the camera (localhost is fine "
        "without): with --certfile/--keyfile, else a self-signed certificate made once with openssl",
    )
    parser.add_argument("--certfile", metavar="PEM", help="the https certificate (e.g. from mkcert)")
    parser.add_argument("--keyfile", metavar="PEM", help="its private key")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse values that would start a server other than the one asked for, before loading the model.

    Raises:
        EmoError: a port outside 0-65535, a limit or timeout not above 0, a malformed origin.
    """
    if not 0 <= args.port <= 65535:  # the OS would take the port modulo 65536
        raise EmoError(f"--port {args.port} is not a port: choose one from 1 to 65535 (0: any free one)")
    for name, value in [
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-pixels", args.max_pixels),
        ("--timeout", args.timeout),
    ]:
        if not 0 < value < float("inf"):
            raise EmoError(f"{name} {value:g}: give a number above 0")
    allowed_origins(args.allow_origin)
    if (args.certfile or args.keyfile) and not args.https:
        raise EmoError("--certfile and --keyfile go with --https: add --https")
    if bool(args.certfile) != bool(args.keyfile):
        raise EmoError(
            "--https needs both --certfile and --keyfile (or neither, for a self-signed certificate)"
        )
    for name, path in (("--certfile", args.certfile), ("--keyfile", args.keyfile)):
        if path and not Path(path).is_file():
            raise EmoError(
                f"{name} {path}: no such file: give the PEM file, or leave both out for a self-signed one"
            )


def lan_address() -> str | None:
    """This machine's address on its local network (the route a UDP socket would take; nothing is
    sent), for the URL a phone should open; ``None`` without a network."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.254.254.254", 1))
        return s.getsockname()[0]
    return None


def self_signed(folder: Path | None = None) -> tuple[Path, Path]:
    """A self-signed certificate and key for https on this machine (localhost, 127.0.0.1 and its
    LAN address), made once with the ``openssl`` command into ``$EMO_CACHE_DIR/tls`` and reused
    until 30 days before it expires (it lasts 825 days, the most Apple's devices accept).

    Raises:
        EmoError: no ``openssl`` command, or it failed.
    """
    folder = (
        folder or Path(os.environ.get("EMO_CACHE_DIR", Path.home() / ".cache" / "emo")).expanduser() / "tls"
    )
    cert, key = folder / "cert.pem", folder / "key.pem"
    names = ["DNS:localhost", "IP:127.0.0.1"] + [f"IP:{ip}" for ip in [lan_address()] if ip]
    stamp = folder / "names.txt"
    fresh = (
        cert.is_file()
        and key.is_file()
        and stamp.is_file()
        and stamp.read_text() == ",".join(names)
        and time.time() - cert.stat().st_mtime < 795 * 86400
    )
    if fresh:
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise EmoError(
            "--https needs a certificate: give --certfile and --keyfile (e.g. made by mkcert), or install openssl"
        )
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "825"]
    cmd += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=emo-serve"]
    cmd += ["-addext", f"subjectAltName={','.join(names)}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmoError(f"openssl could not make a certificate ({why}): give --certfile and --keyfile")
    key.chmod(0o600)
    stamp.write_text(",".join(names))
    return cert, key


@exit_on_emo_error
def cli(argv: list[str] | None = None) -> None:
    """``emo-serve``: load the model once, then serve until Ctrl-C."""
    args = parse_args(argv)
    check_args(args)
    if MISSING:
        raise EmoError(f"emo-serve needs the serve extra ({MISSING} is missing): pip install 'emo[serve]'")
    tls = ((args.certfile, args.keyfile) if args.certfile else self_signed()) if args.https else None
    recognizer = load_recognizer(args.model, args.backend, args.detector)
    recognizer.probs([np.zeros((48, 48), np.uint8)])  # warm up, so the first request is not the slow one
    max_upload = int(args.max_upload_mb * 2**20)
    app = create_app(
        recognizer,
        max_upload=max_upload,
        max_pixels=args.max_pixels,
        allow_origins=args.allow_origin,
        web_models=page_models(recognizer),
    )
    scheme = "https" if args.https else "http"
    where = f"{scheme}://{args.host}:{args.port}/" if args.port else f"a free port of {args.host} (below)"
    print(f"emo-serve: {recognizer!r} on {where} (API docs: /docs; server-side page: /server)", flush=True)
    if args.host in ("0.0.0.0", "::") and args.port:
        lan = lan_address()
        if lan:
            print(f"emo-serve: on this network, open {scheme}://{lan}:{args.port}/", flush=True)
        if not args.https:
            print("emo-serve: a phone's browser opens the camera only on https: add --https", flush=True)
    if tls and not args.certfile:
        print(
            f"emo-serve: https with a self-signed certificate ({tls[0]}): each browser warns once; accept it",
            flush=True,
        )
    config = server_config(app, args.host, args.port, args.timeout, max_upload, args.log_level, tls)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    cli()
