"""The runtime on hostile inputs and outputs: decompression bombs, huge boxes, every PIL mode,
over-long file names, outputs that cannot be written, corrupt video, a mis-shaped ONNX file.

Runtime tests (``pytest.mark.runtime``): they also run in a venv of ``pip install .`` alone; those
that need Pillow, onnx or torch skip there. The peak-memory tests run the command in a fresh
process under a small wrapper and read the wrapper's ``RUSAGE_CHILDREN``: the child's peak alone
(a child of pytest itself would inherit pytest's own peak at exec).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import emo
from emo import EmotionRecognizer
from emo.errors import EmoError
from emo.inference import images, predict, realtime
from emo.inference.detect import crop_faces, fit_boxes
from emo.inference.images import MAX_PIXELS, image_size, read_image, to_bgr, to_grey
from emo.inference.video import CsvLog, open_writer
from emo.samples import moving_face_frames, sample_path, write_video

pytestmark = pytest.mark.runtime
ROOT = str(Path(emo.__file__).resolve().parents[1])  # the emo under test: checkout or installed
LIMIT_LINE = (
    "over the 50 M pixel limit: downscale it, or raise the limit (max_pixels= in Python, "
    "--max-pixels on the command line)"
)
#: 3,000 characters: over every system's 255-byte file name limit.
LONG = "a" * 3000


# ------------------------------------------------------------------------------- helpers
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 20000, height: int = 20000, channels: int = 3) -> Path:
    """A valid PNG of zeros, ~1 MB for 20000 x 20000 RGB, written in milliseconds with little
    memory: one band of zero rows is deflated once behind a full flush (which makes it
    independent of what came before) and repeated; the Adler-32 of n zero bytes is n << 16 | 1."""
    row = 1 + width * channels  # a filter byte, then the pixels
    band_rows = max(1, min(height, (1 << 22) // row))
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    band = block.compress(bytes(row * band_rows)) + block.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(height, band_rows)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(bytes(row * rest)) + tail.flush(zlib.Z_FINISH)
    adler = struct.pack(">I", (((row * height) % 65521) << 16) | 1)
    idat = b"\x78\xda" + band * full + last + adler
    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
    return path


def bomb_headers(width: int = 20000, height: int = 20000) -> dict[str, bytes]:
    """The first bytes of a file of each format that claims ``width x height`` pixels."""
    w, h = width, height
    jpeg = b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    jpeg += b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    bmp = b"BM" + struct.pack("<IHHI", 54 + w * h * 3, 0, 0, 54)
    bmp += struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    gif = b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0, 0, 0) + b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    webp = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (262, 3, 1)]
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    tiff += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
    tiff += struct.pack("<I", 0)
    return {
        "png": png_header(w, h),
        "jpg": jpeg,
        "bmp": bmp,
        "gif": gif,
        "webp": webp,
        "tif": tiff,
        "pgm": f"P5\n# a comment\n{w} {h}\n255\n".encode(),
        "ppm": f"P6 {w} {h} 255\n".encode(),
    }


def png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def peak_rss_mb(args: list[str], cwd: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``python ARGS`` under a wrapper; the child's peak resident memory (MB) and its result."""
    if sys.platform != "linux":
        pytest.skip("peak memory is read from Linux's getrusage (ru_maxrss in KB)")
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps([peak, done.returncode, done.stdout, done.stderr]))\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd or tempfile.gettempdir(),
        check=True,
    )
    peak, code, stdout, stderr = json.loads(out.stdout)
    return peak / 1024, subprocess.CompletedProcess(args, code, stdout, stderr)


def errors_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("error:", "warning:"))]


@pytest.fixture(scope="module")
def rec() -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained()


@pytest.fixture(scope="module")
def face_bgr() -> np.ndarray:
    return cv2.imread(str(sample_path("astronaut")), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_the_png_bomb_helper_writes_a_valid_png(tmp_path):
    small = png_bomb(tmp_path / "small.png", 301, 203)
    image = cv2.imread(str(small), cv2.IMREAD_UNCHANGED)
    assert image.shape == (203, 301, 3) and not image.any()
    for channels in (1, 3):  # several bands and a tail
        big = png_bomb(tmp_path / f"big{channels}.png", 3000, 1500, channels)
        image = cv2.imread(str(big), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (1500, 3000) and not image.any()
    assert image_size((tmp_path / "big3.png").read_bytes()) == (3000, 1500, "PNG")


# ---------------------------------------------------------------------- 1. the pixel limit
def test_a_png_bomb_is_refused_from_its_header_before_it_is_decoded(rec, bomb, monkeypatch):
    assert bomb.stat().st_size < 2_000_000 and image_size(bomb.read_bytes()) == (20000, 20000, "PNG")

    def never(*args, **kwargs):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(images.cv2, "imdecode", never)
    expected = f"image {bomb} is 20000x20000 (400 M pixels), {LIMIT_LINE}"
    for call in (
        lambda: rec.predict(bomb),
        lambda: rec.predict(str(bomb)),
        lambda: rec.predict([bomb, sample_path("astronaut")]),
        lambda: rec.detect(bomb),
        lambda: read_image(bomb),
        lambda: to_grey(bomb),
    ):
        with pytest.raises(EmoError) as err:
            call()
        assert str(err.value) == expected
    with pytest.raises(EmoError, match="is 20000x20000 .*over the 100 M pixel limit"):
        rec.predict(bomb, max_pixels=100_000_000)


@pytest.mark.parametrize("fmt", list(bomb_headers()))
def test_every_format_is_refused_from_its_header(tmp_path, fmt, monkeypatch):
    path = tmp_path / f"bomb.{fmt}"
    path.write_bytes(bomb_headers()[fmt] + bytes(256))
    assert image_size(path.read_bytes())[:2] == (20000, 20000)
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(
        EmoError, match=f"image .*bomb.{fmt} is 20000x20000 \\(400 M pixels\\), over the 50 M"
    ):
        read_image(path)


@pytest.mark.parametrize(
    "ext", [".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".pgm", ".jp2", ".gif", ".avif", ".ras", ".pam"]
)
def test_real_files_of_every_format_have_their_size_read_and_decode(tmp_path, face_bgr, ext):
    image = cv2.resize(face_bgr, (203, 101))
    if ext == ".pgm":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        ok = False
    if not ok:
        pytest.skip(f"OpenCV {cv2.__version__} cannot write {ext}")
    assert image_size(buf)[:2] == (203, 101)
    (tmp_path / f"x{ext}").write_bytes(buf.tobytes())
    assert read_image(tmp_path / f"x{ext}").shape == (101, 203, 3)
    with pytest.raises(EmoError, match="is 203x101 \\(20,503 pixels\\), over the 20,000 pixel limit"):
        read_image(tmp_path / f"x{ext}", max_pixels=20_000)


def test_a_file_too_large_for_the_limit_is_not_read(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # 300 MB of nothing: a sparse file, no disk used
        f.write(png_header(100, 100))
        f.truncate(300_000_000)
    monkeypatch.setattr(images.np, "fromfile", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(EmoError) as err:
        read_image(big, max_pixels=1_000_000)
    assert str(err.value) == (
        f"image {big} is 300 MB, more than an image within the 1 M pixel limit can be (75 MB): "
        "downscale it, or raise the limit (max_pixels= in Python, --max-pixels on the command line)"
    )


def test_arrays_and_pil_images_over_the_limit_are_refused_before_any_copy(rec, tmp_path):
    huge = np.broadcast_to(np.uint8(7), (20000, 20000, 3))  # 1.2 GB, as a view of one byte
    for image in (huge, huge[..., 0], np.broadcast_to(np.float64(0.5), (100_000, 100_000))):
        with pytest.raises(
            EmoError, match=r"image array is \d+x\d+ \(.* pixels\), over the 50 M pixel limit"
        ):
            rec.predict(image)
    with pytest.raises(EmoError, match="over the 50 M pixel limit"):
        to_bgr(huge)
    with pytest.raises(EmoError, match="over the 50 M pixel limit"):
        rec.classify([huge[..., 0]])
    assert rec.predict(np.zeros((40, 40), np.uint8), max_pixels=1600) == []
    with pytest.raises(EmoError, match="40x40 \\(1,600 pixels\\), over the 1,599 pixel limit"):
        rec.predict(np.zeros((40, 40), np.uint8), max_pixels=1599)
    for bad in (0, -5, 1.5, "many", True):
        with pytest.raises(EmoError, match="max_pixels=.*: give a positive number of pixels"):
            rec.predict(np.zeros((4, 4), np.uint8), max_pixels=bad)
    small = EmotionRecognizer.from_pretrained(max_pixels=1000)
    assert small.max_pixels == 1000
    with pytest.raises(EmoError, match="over the 1,000 pixel limit"):
        small.predict(sample_path("astronaut"))
    Image = pytest.importorskip("PIL.Image", reason="PIL images need Pillow")
    # 60 M pixels: over emo's limit, under Pillow's own (89 M, where it warns; it refuses 179 M)
    with Image.open(png_bomb(tmp_path / "pil.png", 10000, 6000)) as lazy:  # the header only
        with pytest.raises(EmoError) as err:
            rec.predict(lazy)
    assert str(err.value) == f"PIL image (RGB) is 10000x6000 (60 M pixels), {LIMIT_LINE}"


def test_emo_predict_and_realtime_take_max_pixels(tmp_path, capsys):
    photo = str(sample_path("astronaut"))  # 256 x 256 = 65,536 pixels
    assert predict.main([photo, "--json", "--max-pixels", "65536"]) == 0
    assert predict.main([photo, "--json", "--max-pixels", "65535"]) == 1
    out, err = capsys.readouterr()
    assert errors_of(err) == [
        f"error: image {photo} is 256x256 (65,536 pixels), over the 65,535 pixel limit: downscale it, or "
        "raise the limit (max_pixels= in Python, --max-pixels on the command line)"
    ]
    with pytest.raises(SystemExit):
        predict.main([photo, "--max-pixels", "0"])
    assert errors_of(capsys.readouterr().err) == [
        "error: max_pixels=0: give a positive number of pixels (default 50,000,000)"
    ]
    video = write_video(tmp_path / "clip.mp4", moving_face_frames(3), fps=10)  # 640 x 480
    assert predict.main([str(video), "--json", "--max-pixels", "300000"]) == 1
    err = capsys.readouterr().err
    assert f"error: video {video}'s frame is 640x480 (307,200 pixels), over the 300,000 pixel limit" in err
    with pytest.raises(SystemExit):
        realtime.main(["--source", str(video), "--headless", "--max-pixels", "300000"])
    (line,) = errors_of(capsys.readouterr().err)
    assert line.startswith(f"error: video {video}'s frame is 640x480 (307,200 pixels), over the 300,000")
    assert realtime.parse_args([]).max_pixels == MAX_PIXELS == predict.parse_args(["x"]).max_pixels


def test_emo_predict_batches_by_pixels_too(monkeypatch):
    photos = [sample_path("astronaut"), sample_path("camera"), sample_path("astronaut")]
    calls = []
    model = EmotionRecognizer.from_pretrained()
    batch = model.predict
    monkeypatch.setattr(
        model, "predict", lambda images, **kw: calls.append(len(images)) or batch(images, **kw)
    )
    monkeypatch.setattr(predict, "BATCH_PIXELS", 100_000)  # under two 256 x 256 photos
    runner = predict.Predictor(model, progress=False)
    runner.images(photos)
    assert calls == [2, 1] and len(runner.rows) == 3 and not runner.errors


# ------------------------------------------------------------------------------- 2. boxes
def test_boxes_are_clipped_before_any_crop_and_bad_ones_refused(rec, face_bgr):
    (face,) = rec.predict(face_bgr, boxes=[[0, 0, 100000, 100000]])
    assert face.box == (0, 0, 256, 256)
    (edge,) = rec.predict(face_bgr, boxes=[[-10, -20, 300, 400]])
    assert edge.box == (0, 0, 256, 256)
    # what detect() finds, given back, gives what predict() finds (squares past the border too)
    found = rec.detect(face_bgr)
    assert [f.box for f in rec.predict(face_bgr, boxes=found)] == [f.box for f in rec.predict(face_bgr)]
    assert rec.predict(face_bgr, boxes=np.zeros((0, 4))) == []
    assert len(rec.predict(face_bgr, boxes=[10.7, 20.2, 50.9, 50.5])) == 1  # one box, floats truncated
    cases = {
        "box [0, 0, -5, 5] is empty in the 256x256 image (w and h must be positive)": [[0, 0, -5, 5]],
        "box [0, 0, 0, 10] is empty in the 256x256 image (w and h must be positive)": [[0, 0, 0, 10]],
        "box [300, 10, 10, 10] is empty in the 256x256 image (it has no pixel inside the image)": [
            [300, 10, 10, 10]
        ],
        "box [-100, -100, 100, 100] is empty": [[-100, -100, 100, 100]],
        "box [1e+300, 0, 5, 5] is empty": [[1e300, 0, 5, 5]],
        "box [nan, 0, 1, 1] is not finite": [[float("nan"), 0, 1, 1]],
        "box [0, 0, inf, 1] is not finite": [[0, 0, float("inf"), 1]],
        "boxes of shape (1, 3): give (K, 4)": [[1, 2, 3]],
        "boxes of shape (2, 2, 4): give (K, 4)": np.zeros((2, 2, 4)),
        "boxes must be numbers": "abc",
    }
    for message, boxes in cases.items():
        with pytest.raises(EmoError) as err:
            rec.predict(face_bgr, boxes=boxes)
        assert str(err.value).startswith(message), str(err.value)
    with pytest.raises(EmoError, match="boxes= goes with one image"):
        rec.predict([face_bgr], boxes=[[0, 0, 10, 10]])


def test_crops_never_hold_more_than_four_times_the_image():
    grey = np.zeros((120, 80), np.uint8)
    fitted = fit_boxes(np.array([[-(10**9), -(10**9), 2 * 10**9, 2 * 10**9]]), grey.shape)
    assert fitted.tolist() == [[-40, -60, 160, 240]]
    (crop,) = crop_faces(grey, [[0, 0, 10**12, 10**12]])
    assert crop.shape == (180, 120)  # the image and half of it again, right and down
    (inside,) = crop_faces(grey, [[10, 10, 20, 30]])
    assert inside.shape == (30, 20) and inside.base is not None  # a view, as before


# ------------------------------------------------------------------------ 3. peak memory
def test_emo_predict_on_three_png_bombs_stays_under_1_5_gb(tmp_path, bomb):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bomb1.png", "bomb2.png", "bomb3.png"):
        (folder / name).write_bytes(bomb.read_bytes())
    for name in ("astronaut", "camera"):
        (folder / f"{name}.png").write_bytes(sample_path(name).read_bytes())
    peak, done = peak_rss_mb(["-m", "emo", "predict", str(folder), "--json"])
    assert done.returncode == 1, done.stderr  # the bombs are errors ...
    assert sorted(Path(r["file"]).name for r in json.loads(done.stdout)) == ["astronaut.png", "camera.png"]
    assert [line for line in errors_of(done.stderr)] == [
        f"error: image {folder / name} is 20000x20000 (400 M pixels), {LIMIT_LINE}"
        for name in ("bomb1.png", "bomb2.png", "bomb3.png")
    ]  # ... the good images still get their rows
    assert peak < 1536, f"peak resident memory {peak:.0f} MB (3.7 GB before the limit)"


def test_predict_with_a_huge_box_stays_under_1_5_gb():
    code = (
        "from emo import EmotionRecognizer\n"
        "from emo.samples import sample_path\n"
        "(face,) = EmotionRecognizer.from_pretrained().predict(\n"
        "    sample_path('astronaut'), boxes=[[0, 0, 100000, 100000]])\n"
        "print(face.box)\n"
    )
    peak, done = peak_rss_mb(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(0, 0, 256, 256)"
    assert peak < 1536, f"peak resident memory {peak:.0f} MB (10.7 GB before boxes were clipped)"


# --------------------------------------------------------------------------- 4. PIL modes
def test_every_pil_mode_gives_the_faces_the_file_gives(rec, face_bgr, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="PIL images need Pillow")
    grey = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)
    sixteen = grey.astype(np.uint16) * 257 + 3  # a 16-bit image that uses the whole range
    cv2.imwrite(str(tmp_path / "g16.png"), sixteen)
    by_path = rec.predict(tmp_path / "g16.png")
    assert len(by_path) == 1
    with Image.open(tmp_path / "g16.png") as opened:
        assert opened.mode.startswith("I")  # I;16 (older Pillow: I)
        same = rec.predict(opened)
    assert [f.box for f in same] == [f.box for f in by_path]
    np.testing.assert_allclose(same[0].probs, by_path[0].probs, atol=1e-6)  # OpenCV's >> 8, too

    rgb = Image.fromarray(face_bgr[..., ::-1].copy())
    modes = {
        "I;16": Image.frombytes("I;16", (256, 256), sixteen.astype("<u2").tobytes()),
        "I;16B": Image.frombytes("I;16B", (256, 256), sixteen.astype(">u2").tobytes()),
        "I": Image.fromarray(sixteen.astype(np.int32)),  # 16-bit values in 32 bits
        "I 0..255": Image.fromarray(grey.astype(np.int32)),
        "F": Image.fromarray(grey.astype(np.float32) / 255),  # 0..1
        "F any range": Image.fromarray(grey.astype(np.float32) * 0.37 - 20),
        "L": rgb.convert("L"),
        "LA": rgb.convert("LA"),
        "P": rgb.convert("P"),
        "PA": rgb.convert("PA"),
        "RGBA": rgb.convert("RGBA"),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
        "HSV": rgb.convert("HSV"),
    }
    for mode, image in modes.items():
        faces = rec.predict(image)
        assert len(faces) == 1 and faces[0].label == "happy", mode
        assert np.abs(np.array(faces[0].box) - np.array(by_path[0].box)).max() <= 8, mode
    # 1-bit, palette and alpha images: the API and the file give the same faces
    for mode in ("1", "P", "LA", "RGBA", "L"):
        image = rgb.convert(mode)
        image.save(tmp_path / f"{mode}.png")
        assert rec.predict(image) == rec.predict(tmp_path / f"{mode}.png"), mode
    la = Image.new("La", (32, 32))  # a mode Pillow cannot convert to RGB
    assert to_bgr(la).shape == (32, 32, 3)


def test_integer_and_float_arrays_are_scaled_by_their_range():
    assert to_grey(np.array([[0, 65535]], np.uint16)).tolist() == [[0, 255]]  # >> 8, as OpenCV reads it
    assert to_grey(np.array([[0, 255]], np.uint16)).tolist() == [[0, 255]]  # already 8-bit values
    assert to_grey(np.array([[-100, 100]], np.int32)).tolist() == [[0, 255]]
    assert to_grey(np.array([[0.0, 0.5, 1.0]], np.float32)).tolist() == [[0, 128, 255]]
    assert to_grey(np.array([[-1.0, 1.0, np.nan, np.inf]], np.float64)).tolist() == [[0, 255, 0, 255]]
    assert to_grey(np.array([[1e308, -1e308]])).tolist() == [[255, 0]]  # no overflow
    assert to_grey(np.full((3, 3), np.nan)).tolist() == [[0] * 3] * 3
    for bad in (np.zeros((4, 4), complex), np.zeros((4, 4), object), np.zeros((4, 4), "U3")):
        with pytest.raises(EmoError, match="dtype .* is not supported"):
            to_bgr(bad)


# --------------------------------------------------------------------- 5. long file names
def test_a_3000_character_file_name_is_one_line_everywhere(rec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long_png = f"{LONG}.png"
    with pytest.raises(EmoError) as err:
        rec.predict(long_png)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert "(3,004 characters)" in str(err.value)
    photo = str(sample_path("astronaut"))
    calls = [
        (predict.main, [long_png, "--json"]),
        (predict.main, [photo, "--save-dir", LONG]),
        (predict.main, [photo, "--report", LONG]),
        (predict.main, [photo, "--model", f"{LONG}.onnx"]),
        (realtime.main, ["--source", f"{LONG}.mp4", "--headless"]),
        (realtime.main, ["--source", photo, "--headless", "--csv", f"{LONG}.csv"]),
        (realtime.main, ["--source", photo, "--headless", "--save", f"{LONG}.mp4"]),
    ]
    for main, args in calls:
        try:
            code = main(args)
        except SystemExit as exit_:
            code = exit_.code
        assert code == 1, args[:2]
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(errors_of(err)) == 1, (args[:2], err[-500:])
        assert max(len(line) for line in errors_of(err)) < 400


def test_emo_export_refuses_a_long_or_bad_out_before_loading(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="emo export needs the train extra")
    from emo import export, weights

    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before --out was checked")

    monkeypatch.setattr(export, "load_checkpoint", never)
    ckpt = weights.checkpoint_path("vgg_s")
    (tmp_path / "a_file").write_text("")
    for out, message in [
        (tmp_path / f"{LONG}.onnx", "the file name is too long for this system"),
        (tmp_path, "is a folder: give a file name"),
        (tmp_path / "a_file" / "model.onnx", "is a file, not a folder"),
        (ckpt, "is an input: choose another name"),
    ]:
        with pytest.raises(SystemExit):
            export.main(["--ckpt", str(ckpt), "--out", str(out)])
        (line,) = errors_of(capsys.readouterr().err)
        assert message in line and len(line) < 400, line


# ------------------------------------------------------------------------------ 6. outputs
def test_realtime_outputs_are_checked_before_any_frame(tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "clip.mp4", moving_face_frames(3), fps=10)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(realtime, "load_model", never)
    cases = [
        (["--csv", str(tmp_path / "folder")], f"--csv {tmp_path / 'folder'} is a folder: give a file name"),
        (["--save", str(tmp_path / "folder")], f"--save {tmp_path / 'folder'} is a folder: give a file name"),
        (["--csv", str(video)], f"--csv {video} is an input: choose another name"),
        (["--save", str(video)], f"--save {video} is an input: choose another name"),
        (["--csv", str(tmp_path / "a_file" / "x.csv")], "is a file, not a folder"),
        (["--save", str(tmp_path / "o.mp4"), "--csv", str(tmp_path / "o.mp4")], "--save and --csv are both"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit):
            realtime.main(["--source", str(video), "--headless", *extra])
        (line,) = errors_of(capsys.readouterr().err)
        assert message in line, line


def test_predict_outputs_are_checked_before_any_work(tmp_path, capsys):
    photo = str(sample_path("astronaut"))
    (tmp_path / "a_file").write_text("")
    for extra, message in [
        (
            ["--report", str(tmp_path / "a_file")],
            f"error: --report {tmp_path / 'a_file'} is a file: give a folder",
        ),
        (["--save-dir", str(tmp_path / "a_file")], "is a file: give a folder for the annotated copies"),
        (["--report", str(tmp_path / "a_file" / "sub")], "is a file, not a folder"),
    ]:
        with pytest.raises(SystemExit):
            predict.main([photo, "--json", *extra])
        out, err = capsys.readouterr()
        assert out == "" and len(errors_of(err)) == 1 and message in err, err


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write to a read-only folder (root)")
        photo = str(sample_path("astronaut"))
        for main, args in [
            (predict.main, [photo, "--json", "--report", str(locked)]),
            (predict.main, [photo, "--json", "--save-dir", str(locked / "sub")]),
            (realtime.main, ["--source", photo, "--headless", "--csv", str(locked / "x.csv")]),
        ]:
            with pytest.raises(SystemExit):
                main(args)
            out, err = capsys.readouterr()
            assert out == "" and len(errors_of(err)) == 1 and "cannot write to" in err, err
    finally:
        locked.chmod(0o755)


def test_the_os_access_check_refuses_unwritable_folders(tmp_path, monkeypatch):
    # The same refusal as above, where the test runs as root (os.access is what decides).
    monkeypatch.setattr(images.os, "access", lambda path, mode: False)
    with pytest.raises(EmoError, match="--report .*: cannot write to .*: choose a folder you can write to"):
        images.check_output(tmp_path, "--report", folder=True)
    with pytest.raises(EmoError, match="--csv .*x.csv: cannot write to"):
        images.check_output(tmp_path / "x.csv", "--csv")


def test_outputs_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    model = realtime.load_model()
    video = write_video(tmp_path / "clip.mp4", moving_face_frames(6), fps=10)
    csv_path, mp4 = tmp_path / "out" / "faces.csv", tmp_path / "out" / "annotated.mp4"
    csv_path.parent.mkdir()
    csv_path.write_text("the old run\n")
    seen = []
    predict_faces = realtime.predict_faces

    def watch(*args, **kwargs):  # mid-run the destinations are untouched: the work is beside them
        seen.append((csv_path.read_text(), mp4.exists()))
        return predict_faces(*args, **kwargs)

    monkeypatch.setattr(realtime, "predict_faces", watch)
    stats = realtime.run(video, model=model, headless=True, save=mp4, csv_path=csv_path)
    assert stats["frames"] == 6 and stats["warning"] is None
    assert seen == [("the old run\n", False)] * 6
    assert len(csv_path.read_text().splitlines()) == 7 and sorted(os.listdir(csv_path.parent)) == [
        "annotated.mp4",
        "faces.csv",
    ]  # no temporary file left
    assert oct(csv_path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    # A writer whose frames never reach the file: an error, and the destination left alone.
    writer = open_writer(tmp_path / "lost.mp4", 10, (48, 64, 3))
    real = writer.writer

    class Deaf:  # frames that never reach the file (a full disk, a codec that gave up)
        def write(self, frame):
            pass

        def release(self):
            real.release()

    writer.writer = Deaf()
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(EmoError, match="could not write video .*lost.mp4: the file holds 0 of 3 frames"):
        writer.release()
    assert not (tmp_path / "lost.mp4").exists() and not list(tmp_path.glob(".lost*"))
    # A CSV log that is abandoned leaves nothing.
    log = CsvLog(tmp_path / "gone.csv", ["happy"])
    log.abort()
    assert not list(tmp_path.glob("*gone*"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_annotated_copies_never_replace_a_file_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "astronaut_annotated.png").write_bytes(b"the user's own file")
    photo = str(sample_path("astronaut"))
    assert predict.main([photo, "--json", "--save-dir", str(out)]) == 0
    assert (out / "astronaut_annotated.png").read_bytes() == b"the user's own file"
    assert cv2.imread(str(out / "astronaut-1_annotated.png")).shape == (256, 256, 3)
    assert predict.main([photo, "--json", "--save-dir", str(out)]) == 0
    assert (out / "astronaut-2_annotated.png").is_file()
    assert predict.main([photo, "--json", "--save-dir", str(out), "--overwrite"]) == 0
    assert cv2.imread(str(out / "astronaut_annotated.png")).shape == (256, 256, 3)  # replaced
    assert sorted(os.listdir(out)) == [
        "astronaut-1_annotated.png",
        "astronaut-2_annotated.png",
        "astronaut_annotated.png",
    ]
    # An input is never replaced, --overwrite or not.
    (out / "in_annotated.png").write_bytes(sample_path("camera").read_bytes())
    (out / "in.png").write_bytes(sample_path("astronaut").read_bytes())
    own = (out / "in_annotated.png").read_bytes()
    assert (
        predict.main(
            [
                str(out / "in.png"),
                str(out / "in_annotated.png"),
                "--json",
                "--save-dir",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert (out / "in_annotated.png").read_bytes() == own
    capsys.readouterr()


def test_report_files_are_written_atomically_and_checked(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", moving_face_frames(4), fps=10)
    rep = tmp_path / "rep"
    assert predict.main([str(video), "--report", str(rep), "--csv"]) == 0
    assert sorted(os.listdir(rep)) == ["clip.csv", "clip_summary.json", "clip_timeline.png"]
    (rep / "clip.csv").unlink()
    (rep / "clip.csv").mkdir()  # a folder where the CSV goes: an error for this video, no traceback
    assert predict.main([str(video), "--report", str(rep), "--csv"]) == 1
    (line,) = errors_of(capsys.readouterr().err)
    assert f"--report {rep / 'clip.csv'} is a folder" in line
    # A report file that would replace an input: refused before any work.
    timeline = rep / "clip_timeline.png"
    with pytest.raises(SystemExit):
        predict.main([str(video), str(timeline), "--report", str(rep), "--json"])
    out, err = capsys.readouterr()
    assert out == "" and errors_of(err) == [
        f"error: --report {rep} would write over the input {timeline}: choose another folder"
    ]


# ------------------------------------------------------------------------ 7. corrupt video
def corrupt_video(path: Path, frames: int = 30) -> Path:
    write_video(path, moving_face_frames(frames), fps=24)
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 10 : n * 9 // 10] = bytes(n * 9 // 10 - n // 10)  # the middle of the frames, zeroed
    path.write_bytes(bytes(data))
    return path


def test_a_video_that_stops_early_is_a_warning_and_exit_1(tmp_path, capsys):
    clip = corrupt_video(tmp_path / "clip.mp4")
    cap = cv2.VideoCapture(str(clip))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 30  # the container still says 30
    cap.release()
    photo = str(sample_path("astronaut"))
    assert predict.main([str(clip), photo, "--json"]) == 1
    out, err = capsys.readouterr()
    rows = json.loads(out)
    frames = sorted({r["frame"] for r in rows if r["file"] == str(clip)})
    (line,) = errors_of(err)
    match = re.fullmatch(
        rf"warning: {re.escape(str(clip))}: decoding stopped at frame (\d+) of 30 \(a corrupt file\?\); "
        "results cover the frames read",
        line,
    )
    assert match and frames == list(range(int(match[1]))) and 0 < len(frames) < 30
    assert [r["label"] for r in rows if r["file"] == photo] == ["happy"]  # the rest still ran
    stats = realtime.run(clip, model=realtime.load_model(), headless=True)
    assert stats["frames"] == len(frames) and "decoding stopped at frame" in stats["warning"]
    # a whole video: no warning, exit 0
    whole = write_video(tmp_path / "whole.mp4", moving_face_frames(5), fps=24)
    assert predict.main([str(whole), "--json"]) == 0
    assert errors_of(capsys.readouterr().err) == []


# ------------------------------------------------------------------- 8. a mis-shaped model
def _tiny_onnx(path: Path, side: int, classes: int, names: list[str]) -> Path:
    onnx = pytest.importorskip("onnx", reason="building a test model needs the onnx package")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["faces"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Concat", ["flat"] * classes, ["logits"], axis=1),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="emo_class_names", value=json.dumps(names))
    model.metadata_props.add(key="emo_preprocess", value="{}")
    onnx.save(model, str(path))
    return path


def test_an_onnx_file_with_emo_metadata_but_the_wrong_shape_fails_at_load(tmp_path, capsys):
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    wrong_side = _tiny_onnx(tmp_path / "side.onnx", 64, 7, names)
    wrong_classes = _tiny_onnx(tmp_path / "classes.onnx", 48, 5, names)
    for path, shapes in [
        (wrong_side, "takes ['N', 1, 64, 64] and gives ['N', 7]"),
        (wrong_classes, "takes ['N', 1, 48, 48] and gives ['N', 5]"),
    ]:
        with pytest.raises(EmoError) as err:
            EmotionRecognizer.from_checkpoint(path)
        assert str(err.value) == (
            f"{path} {shapes}, but its metadata says (N, 1, 48, 48) faces to 7 classes: "
            "re-export it with emo-export"
        )
        with pytest.raises(SystemExit):
            predict.main([str(sample_path("astronaut")), "--model", str(path)])
        (line,) = errors_of(capsys.readouterr().err)
        assert line == f"error: {err.value}"
    assert EmotionRecognizer.from_checkpoint(_tiny_onnx(tmp_path / "ok.onnx", 48, 7, names)).tta == "none"
