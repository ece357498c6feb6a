"""Property tests (hypothesis) of the runtime's inputs: whatever bytes, headers, arrays, PIL
images and boxes come in, the image reader, the crop path and ``EmotionRecognizer.predict`` give
a result or raise :class:`EmoError`, nothing else, and memory stays bounded.

Bounded runs (``max_examples`` 100-200, no deadline): seconds each. Memory is the process's peak
resident size (Linux's VmHWM, restarted through ``/proc/self/clear_refs``) over a whole test.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emo import EmotionRecognizer  # noqa: E402
from emo.errors import EmoError  # noqa: E402
from emo.inference.detect import check_boxes, crop_faces, fit_boxes, shrink  # noqa: E402
from emo.inference.images import MAX_PIXELS, decode_image, image_size, read_image, to_bgr, to_grey  # noqa: E402
from emo.inference.preprocess import Preprocess, preprocess_faces  # noqa: E402
from emo.samples import sample_path  # noqa: E402

pytestmark = pytest.mark.runtime
#: A small pixel limit for the fuzzed bytes: a garbled header that passes it decodes fast.
FUZZ_PIXELS = 4_000_000
#: What a test may add to the process's peak resident memory.
MAX_GROWTH_MB = 600
FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: a failure here is reproducible
)


@contextlib.contextmanager
def bounded_memory(limit_mb: int = MAX_GROWTH_MB) -> Iterator[None]:
    """Fail if the process's peak resident memory grows by more than ``limit_mb`` in the block."""
    status, refs = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if not status.exists():
        yield
        return

    def field(name: str) -> int:
        return int(status.read_text().split(f"{name}:")[1].split()[0]) // 1024

    try:
        refs.write_text("5")  # restart the peak (VmHWM) from the current size
    except OSError:
        yield
        return
    before = field("VmRSS")
    yield
    growth = field("VmHWM") - before
    assert growth < limit_mb, f"peak resident memory grew by {growth} MB"


@functools.lru_cache(maxsize=1)
def samples() -> dict[str, bytes]:
    """Small valid files of every format OpenCV can write here, to garble."""
    image = cv2.resize(cv2.imread(str(sample_path("astronaut"))), (64, 48))
    out = {}
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".pgm", ".gif", ".jp2", ".pam", ".ras"):
        src = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if ext == ".pgm" else image
        try:
            ok, buf = cv2.imencode(ext, src)
        except cv2.error:
            ok = False
        if ok:
            out[ext] = buf.tobytes()
    return out


@pytest.fixture(scope="module")
def rec() -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained()


def decode_or_emo_error(data: bytes) -> None:
    try:
        image = decode_image(data, FUZZ_PIXELS, "fuzz")
    except EmoError as err:
        assert "\n" not in str(err)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= FUZZ_PIXELS


# ---------------------------------------------------------------------------------- bytes
@FAST
@given(st.binary(max_size=4096))
def test_random_bytes_are_an_image_or_one_emo_error(data):
    size = image_size(data)  # never raises
    assert size is None or (size[0] > 0 and size[1] > 0)
    decode_or_emo_error(data)


@FAST
@given(
    fmt=st.sampled_from(sorted(samples())),
    cut=st.integers(0, 4096),
    flips=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=8),
    fields=st.lists(st.tuples(st.integers(0, 64), st.integers(0, 2**32 - 1)), max_size=3),
)
def test_truncated_and_garbled_headers_are_an_image_or_one_emo_error(fmt, cut, flips, fields):
    data = bytearray(samples()[fmt])
    for at, value in flips:  # bytes flipped, mostly in the header
        if at < len(data):
            data[at] = value
    for at, value in fields:  # 32-bit fields (sizes, offsets, lengths) overwritten
        if at + 4 <= len(data):
            data[at : at + 4] = struct.pack(">I", value)
    with bounded_memory():
        decode_or_emo_error(bytes(data[: max(cut, 1)] if cut < len(data) else data))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    data=st.binary(min_size=1, max_size=512), fmt=st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tif"])
)
def test_files_with_random_contents_are_one_emo_error(tmp_path_factory, data, fmt):
    path = tmp_path_factory.mktemp("fuzz") / f"x{fmt}"
    path.write_bytes(samples().get(fmt, b"")[:16] + data)
    try:
        image = read_image(path, FUZZ_PIXELS)
    except EmoError as err:
        assert "\n" not in str(err)
    else:
        assert image.ndim == 3 and image.dtype == np.uint8


# --------------------------------------------------------------------------------- arrays
DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, bool, np.complex64, object]  # fmt: skip


@st.composite
def arrays(draw) -> np.ndarray:
    """Arrays of any dtype and shape (up to 20,000 elements) with values over the dtype's range,
    NaN and infinities; or a huge image over the pixel limit, as a zero-memory view."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if draw(st.integers(0, 4)) == 0:  # refused before any copy
        height = draw(st.integers(1, 200_000))
        width = max(draw(st.integers(1, 200_000)), MAX_PIXELS // height + 1)
        tail = draw(st.sampled_from([(), (1,), (3,), (4,), (2,)]))
        return np.broadcast_to(np.zeros(1, dtype), (height, width, *tail))
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim)))
    if ndim and np.prod(shape) > 20_000:
        shape = (*shape[:-1], 20_000 // int(np.prod(shape[:-1])))
    if dtype.kind == "O":
        return np.full(shape, None, dtype=object)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "c":
        return np.zeros(shape, dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        top = draw(st.sampled_from([255, 65535, int(info.max)]))
        low = draw(st.sampled_from([0, int(info.min)]))
        return rng.integers(low, min(top, int(info.max)), shape, dtype=dtype, endpoint=True)
    spread = draw(st.sampled_from([1.0, 255.0, 1e4, float(np.finfo(dtype).max) / 4]))
    with np.errstate(over="ignore"):  # float16 overflows to infinity: one more odd value
        values = (rng.standard_normal(shape) * spread).astype(dtype)
    special = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if special is not None and values.size:
        values.reshape(-1)[rng.integers(0, values.size, max(1, values.size // 7))] = special
    return values


@FAST
@given(arrays())
def test_any_array_is_a_bgr_image_or_one_emo_error(array):
    with bounded_memory(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (overflow, invalid casts) either
        for convert, ndim in ((to_bgr, 3), (to_grey, 2)):
            try:
                out = convert(array)
            except EmoError as err:
                assert "\n" not in str(err)
                continue
            assert out.dtype == np.uint8 and out.ndim == ndim and out.shape[:2] == array.shape[:2]


PIL_MODES = ["1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
             "HSV", "I", "I;16", "I;16B", "I;16L", "F"]  # fmt: skip


@FAST
@given(
    mode=st.sampled_from(PIL_MODES),
    width=st.integers(0, 48),
    height=st.integers(0, 48),
    seed=st.integers(0, 9),
)
def test_any_pil_image_is_a_bgr_image_or_one_emo_error(mode, width, height, seed):
    Image = pytest.importorskip("PIL.Image", reason="PIL images need Pillow")
    base = Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (max(height, 1), max(width, 1), 3), np.uint8)
    )
    image = base.resize((width, height)) if width and height else Image.new("RGB", (width, height))
    try:
        image = image.convert(mode)
    except ValueError:  # a conversion Pillow lacks: a blank image of the mode
        image = Image.new(mode, (width, height))
    try:
        out = to_bgr(image)
    except EmoError as err:
        assert "\n" not in str(err)
        assert width * height == 0, err  # only empty images are refused
    else:
        assert out.shape == (height, width, 3) and out.dtype == np.uint8


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(samples())))
def test_a_pil_image_of_an_encoded_file_reads_like_the_file(fmt):
    Image = pytest.importorskip("PIL.Image", reason="PIL images need Pillow")
    data = samples()[fmt]
    try:
        pil = Image.open(io.BytesIO(data))
        pil.load()
    except Exception:  # noqa: BLE001  (formats Pillow does not read)
        return
    assert to_bgr(pil).shape == decode_image(data).shape


# ---------------------------------------------------------------------------------- boxes
coordinate = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-300, 300),
)
box_lists = st.lists(st.lists(coordinate, min_size=4, max_size=4), max_size=4)
odd_boxes = st.one_of(
    box_lists,
    st.lists(st.lists(coordinate, min_size=0, max_size=6), max_size=3),  # not four numbers a box
    st.just("abc"),
    st.just([[1, 2], [3, 4, 5, 6]]),
    st.just(None),
)


@FAST
@given(boxes=box_lists, height=st.integers(1, 300), width=st.integers(1, 300))
def test_the_crop_path_is_bounded_whatever_the_boxes(boxes, height, width):
    grey = np.zeros((height, width), np.uint8)
    with bounded_memory():
        try:
            checked = check_boxes(boxes, grey.shape)
        except EmoError:
            return
        fitted = fit_boxes(checked, grey.shape)
        assert (fitted[:, 2] <= 2 * width).all() and (fitted[:, 3] <= 2 * height).all()
        crops = crop_faces(grey, checked)
        assert all(c.size and c.shape[0] <= 2 * height and c.shape[1] <= 2 * width for c in crops)
        if crops:
            assert preprocess_faces(np.stack([cv2.resize(c, (48, 48)) for c in crops]), Preprocess()).shape[
                1:
            ] == (
                1,
                48,
                48,
            )


@FAST
@given(scale=st.floats(1e-6, 1.0), height=st.integers(1, 3000), width=st.integers(1, 3000))
def test_shrinking_any_image_keeps_a_pixel(scale, height, width):
    small = shrink(np.zeros((height, width), np.uint8), scale)
    assert small.shape[0] >= 1 and small.shape[1] >= 1


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    boxes=odd_boxes,
    height=st.integers(1, 400),
    width=st.integers(1, 400),
    channels=st.sampled_from([0, 1, 3, 4]),
)
def test_predict_with_any_boxes_gives_faces_or_one_emo_error(rec, boxes, height, width, channels):
    shape = (height, width) if channels == 0 else (height, width, channels)
    image = np.full(shape, 90, np.uint8)
    with bounded_memory():
        try:
            faces = rec.predict(image, boxes=boxes)
        except EmoError as err:
            assert "\n" not in str(err)
            return
    for face in faces:
        x, y, w, h = face.box
        assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= width and y + h <= height
        assert abs(sum(face.scores.values()) - 1) < 1e-4
