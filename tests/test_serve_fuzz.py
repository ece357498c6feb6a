"""emo-serve against its own OpenAPI schema: schemathesis, every check, in-process (no network).

Schemathesis reads ``/openapi.json`` from the ASGI app and sends what the schema allows and what
it forbids: random queries, missing fields, other content types, other methods. Each answer must
be one the schema documents (status, content type and body: ``{"detail": str}`` for errors), never
a 5xx, schema-valid requests must be accepted and schema-invalid ones refused with a 4xx.

The schema says the multipart field ``file`` is an image (``encoding: {file: {contentType:
image/*}}``); the strategies below make schema-valid uploads real images of every kind the server
reads: PNG (grey, grey+alpha, palette, 1-bit, 16-bit, RGB(A)), JPEG (grey, RGB, CMYK), GIF and
WebP (animated too), BMP and TIFF, from 1x1 to 1x4000 pixels. Deterministic (fixed seed,
derandomized, no example database), bounded by ``MAX_EXAMPLES`` per phase and operation.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis", minversion="4")
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from emo.inference import serve  # noqa: E402

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 100
#: format -> the Pillow modes it is written in (each one the server must accept).
MODES = {
    "PNG": ["L", "LA", "P", "1", "I;16", "RGB", "RGBA"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["P"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["L", "P", "RGB"],
    "TIFF": ["L", "I;16", "RGB", "RGBA"],
}
SENT: list[tuple[str, int]] = []  # (path, status) of each request: what the run covered


@st.composite
def image_files(draw: st.DrawFn, kind: str) -> bytes:
    """One ``kind`` file (Pillow's format name): random pixels, mode, size and frame count."""
    mode = draw(st.sampled_from(MODES[kind]))
    size = draw(
        st.one_of(
            st.tuples(st.integers(1, 64), st.integers(1, 64)),  # tiny to small
            st.tuples(st.integers(1, 3), st.integers(1000, 4000)),  # thin: 1-3 px wide
            st.tuples(st.integers(1000, 4000), st.integers(1, 3)),  # thin: 1-3 px high
        )
    )
    if kind in ("JPEG", "WEBP"):  # libjpeg and libwebp: at most 65,500 and 16,383 px a side
        size = (min(size[0], 16_383), min(size[1], 16_383))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frames = draw(st.integers(1, 3)) if kind in ("GIF", "WEBP", "PNG") else 1
    pictures = []
    for _ in range(frames):
        if mode == "I;16":
            picture = Image.fromarray(rng.integers(0, 65_536, size[::-1], dtype=np.uint16))
        else:
            bands = len(Image.new(mode, (1, 1)).getbands())
            pixels = rng.integers(0, 256, (*size[::-1], bands), dtype=np.uint8)
            picture = Image.fromarray(pixels[..., 0] if bands == 1 else pixels)
            picture = picture.convert(mode)
        pictures.append(picture)
    out = io.BytesIO()
    extra = {"save_all": True, "append_images": pictures[1:]} if frames > 1 else {}
    pictures[0].save(out, kind, **extra)
    return out.getvalue()


class LazyRecognizer:
    """The bundled model, loaded when first used: collecting this file (every test run) stays cheap."""

    loaded = None

    def __getattr__(self, name: str):
        if LazyRecognizer.loaded is None:
            LazyRecognizer.loaded = serve.load_recognizer("vgg_s")
        return getattr(LazyRecognizer.loaded, name)


for kind in MODES:  # what schemathesis sends for the schema's image/* file part
    schemathesis.openapi.media_type(f"image/{kind.lower()}", image_files(kind))
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20240611,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # Every check is on by default; this one needs a limit (a generous one: 2-core CI).
        "checks": {"max_response_time": 30.0},
    }
)
# Built at import, as schemathesis' parametrize needs (its fixture loader fails on pytest 9);
# /live is not in the schema, so its recognizer is the lazy one too.
lazy = LazyRecognizer()
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", serve.create_app(lazy, live_recognizer=lazy), config=CONFIG
)


@schema.parametrize()
def test_emo_serve_matches_its_openapi_schema(case):
    response = case.call_and_validate()  # every check schemathesis has (CONFIG enables them all)
    SENT.append((case.path, response.status_code))


def test_the_fuzzing_reached_the_model():
    """The run above had images classified (200) and bad input refused (4xx), 100 requests and more."""
    predict = [status for path, status in SENT if path == "/predict"]
    if not predict:  # pytest -n: /predict's run may be in another worker
        pytest.skip("POST /predict was fuzzed in another process, or not at all")
    assert 200 in predict and {400, 422} & set(predict), sorted(set(predict))
    assert len(predict) >= MAX_EXAMPLES, len(predict)
