"""Images in: a path, encoded bytes, a PIL image or a numpy array (grey, BGR or BGRA; any integer
or float type) as BGR or grey uint8, with a one-line error for anything else; and the files around
them: names shown in messages, output paths checked before the work and written atomically.

**The pixel limit.** Every image is checked against a limit of width x height pixels
(``MAX_PIXELS``, 50 M; ``max_pixels=`` in Python, ``--max-pixels`` on the command line) before
it costs memory: a file's size is read from its header (:func:`image_size`, small parsers for
PNG, JPEG, BMP, GIF, WebP, TIFF, PNM/PAM/PFM, Sun raster, Radiance HDR, JPEG 2000 and AVIF, no
Pillow) before it is decoded, and an array's or PIL image's from its shape. An image over the
limit is refused in one line, never decoded or read downscaled; a file whose header emo cannot
read is refused as not an image. A 1 MB PNG of 20000 x 20000 zeros would otherwise decode to
1.2 GB (3.7 GB at the peak of ``emo predict``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emo.errors import EmoError

#: The runtime's pixel limit (the server's default too, ``emo serve --max-pixels``): 48 MP phone
#: photos pass; decoded as BGR that is ~150 MB.
MAX_PIXELS = 50_000_000
#: A file may hold at most this many bytes per pixel of the limit (an uncompressed 16-bit RGBA
#: image needs 8), plus ``FILE_SLACK``: a 400 MB file is not read into memory to find it is junk.
BYTES_PER_PIXEL = 8
FILE_SLACK = 64 << 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
NOT_AN_IMAGE = "not an image, or a corrupt one (use PNG, JPEG, BMP or WebP)"
#: Elements converted at a time by ``to_uint8``: its temporaries stay ~32 MB whatever the size.
CHUNK_ELEMENTS = 1 << 22
#: Paths longer than this are shortened in messages (a 3,000-character name is still one line).
SHOWN_PATH = 160


# ---------------------------------------------------------------------------------- names
def shown(path: str | Path) -> str:
    """``path`` for a message: as given, or shortened in the middle when it is very long."""
    text = str(path)
    if len(text) <= SHOWN_PATH:
        return text
    return f"{text[:90]}...{text[-50:]} ({len(text):,} characters)"


def os_reason(err: OSError) -> str:
    """An ``OSError``'s reason in a few words (without the path, which can be 3,000 characters)."""
    if err.errno == errno.ENAMETOOLONG:
        return "the file name is too long for this system"
    return (err.strerror or str(err).splitlines()[0] or type(err).__name__).strip()


def is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the system refuses (too long, bad characters)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def exists(path: Path) -> bool:
    """``path.exists()``, False for names the system refuses (too long, bad characters)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, False for names the system refuses (too long, bad characters)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------- the pixel limit
def check_max_pixels(max_pixels: Any) -> int:
    """``max_pixels`` as a positive int, or a one-line :class:`EmoError`."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise EmoError(
            f"max_pixels={max_pixels!r}: give a positive number of pixels (default {MAX_PIXELS:,})"
        )
    return int(max_pixels)


def millions(n: int) -> str:
    """A pixel count for a message: ``65,536``, ``1.5 M``, ``400 M``, ``1,200 M``."""
    if n >= 100_000_000:
        return f"{n / 1e6:,.0f} M"
    return f"{n / 1e6:.3g} M" if n >= 1_000_000 else f"{n:,}"


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS, what: str = "image") -> None:
    """Raise a one-line :class:`EmoError` when ``width x height`` is over ``max_pixels``."""
    max_pixels = check_max_pixels(max_pixels)
    if int(width) * int(height) > max_pixels:
        raise EmoError(
            f"{what} is {width}x{height} ({millions(int(width) * int(height))} pixels), over the "
            f"{millions(max_pixels)} pixel limit: downscale it, or raise the limit "
            "(max_pixels= in Python, --max-pixels on the command line)"
        )


# --------------------------------------------------------------------------------- headers
def _u16(d: bytes, at: int, order: str = ">") -> int:
    return struct.unpack_from(order + "H", d, at)[0]


def _u32(d: bytes, at: int, order: str = ">") -> int:
    return struct.unpack_from(order + "I", d, at)[0]


def _png(d: bytes) -> tuple[int, int] | None:
    if d[12:16] != b"IHDR":  # libpng wants IHDR first
        return None
    return _u32(d, 16), _u32(d, 20)


#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic; not DHT/JPG/DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(d: bytes) -> tuple[int, int] | None:
    """The first frame header's size, walking the marker segments as libjpeg does (garbage and
    fill bytes before a marker skipped)."""
    at, n = 2, len(d)
    while at < n:
        while at < n and d[at] != 0xFF:  # extraneous bytes: libjpeg warns and skips them
            at += 1
        while at < n and d[at] == 0xFF:
            at += 1
        if at >= n:
            return None
        marker = d[at]
        at += 1
        if marker in _SOF:
            height, width = _u16(d, at + 3), _u16(d, at + 5)
            return (width, height) if width and height else None  # height 0: a DNL marker, unsupported
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        at += _u16(d, at)
    return None


def _bmp(d: bytes) -> tuple[int, int] | None:
    size = _u32(d, 14, "<")
    if size == 12:  # OS/2 BITMAPCOREHEADER
        return _u16(d, 18, "<"), _u16(d, 20, "<")
    width, height = struct.unpack_from("<ii", d, 18)
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _gif(d: bytes) -> tuple[int, int] | None:
    """The larger of the logical screen and the first frame (skipping extensions and palettes)."""
    width, height, flags = _u16(d, 6, "<"), _u16(d, 8, "<"), d[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while at < len(d):
        block = d[at]
        if block == 0x2C:  # image descriptor
            fw, fh = _u16(d, at + 5, "<"), _u16(d, at + 7, "<")
            return max((width, height), (fw, fh), key=lambda s: s[0] * s[1])
        if block != 0x21:  # not an extension: the trailer, or junk
            break
        at += 2
        while d[at]:  # sub-blocks, until a zero length
            at += d[at] + 1
        at += 1
    return width, height


def _webp(d: bytes) -> tuple[int, int] | None:
    kind, data = d[12:16], d[20:]
    if kind == b"VP8 " and data[3:6] == b"\x9d\x01\x2a":
        return _u16(data, 6, "<") & 0x3FFF, _u16(data, 8, "<") & 0x3FFF
    if kind == b"VP8L" and data[0] == 0x2F:
        bits = _u32(data, 1, "<")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return int.from_bytes(data[4:7], "little") + 1, int.from_bytes(data[7:10], "little") + 1
    return None


def _tiff(d: bytes) -> tuple[int, int] | None:
    """The first page's size (what OpenCV decodes), or its tiles' when they are larger."""
    order = "<" if d[:2] == b"II" else ">"
    big = _u16(d, 2, order) == 43
    if big:
        at = struct.unpack_from(order + "Q", d, 8)[0]
        count = struct.unpack_from(order + "Q", d, at)[0]
        entry, start = 20, at + 8
    else:
        at = _u32(d, 4, order)
        count, entry, start = _u16(d, at, order), 12, at + 2
    tags: dict[int, int] = {}
    for i in range(min(count, 4096)):
        e = start + i * entry
        tag, kind = struct.unpack_from(order + "HH", d, e)
        if tag in (256, 257, 322, 323):  # ImageWidth, ImageLength, TileWidth, TileLength
            value = e + (12 if big else 8)
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                return None
            tags[tag] = struct.unpack_from(order + fmt, d, value)[0]
    if 256 not in tags or 257 not in tags:
        return None
    size = (tags[256], tags[257])
    tile = (tags.get(322, 0), tags.get(323, 0))
    return max(size, tile, key=lambda s: s[0] * s[1])


def _tokens(d: bytes, n: int) -> list[bytes]:
    """The first ``n`` whitespace-separated tokens of a PNM header, comments skipped."""
    out: list[bytes] = []
    for line in d[:65536].split(b"\n"):
        out += line.split(b"#")[0].split()
        if len(out) >= n:
            return out[:n]
    raise ValueError("short header")


def _pnm(d: bytes) -> tuple[int, int] | None:
    d = bytes(d[:65536])
    if d[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines before ENDHDR
        fields = {}
        for line in d.split(b"\n")[1:]:
            words = line.split(b"#")[0].split()
            if words[:1] == [b"ENDHDR"]:
                break
            if len(words) == 2:
                fields[words[0]] = words[1]
        return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
    _, width, height = _tokens(d, 3)
    return int(width), int(height)


def _hdr(d: bytes) -> tuple[int, int] | None:
    """Radiance: header lines, a blank line, then e.g. ``-Y 480 +X 640``."""
    head = bytes(d[:65536])
    end = head.find(b"\n\n")
    if end < 0:
        return None
    words = head[end + 2 :].split(b"\n")[0].split()
    if len(words) != 4:
        return None
    first, second = int(words[1]), int(words[3])
    return (second, first) if words[0][1:] == b"Y" else (first, second)


def _j2k(d: bytes, at: int = 0) -> tuple[int, int] | None:
    """A JPEG 2000 codestream's SIZ marker: image extent less its offset, and the tile's."""
    if d[at : at + 4] != b"\xff\x4f\xff\x51":
        return None
    xs, ys, xo, yo, xt, yt = struct.unpack_from(">6I", d, at + 8)
    return max((xs - xo, ys - yo), (xt, yt), key=lambda s: s[0] * s[1])


def _boxes(d: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO base media / JP2 boxes in ``d[start:end]``: (type, content start, content end)."""
    at = start
    while at + 8 <= end:
        size, kind = _u32(d, at), d[at + 4 : at + 8]
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", d, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < head:
            return
        yield kind, at + head, min(at + size, end)
        at += size


def _jp2(d: bytes) -> tuple[int, int] | None:
    sizes = []
    for kind, start, end in _boxes(d, 0, len(d)):
        if kind == b"jp2h":
            for sub, s, _ in _boxes(d, start, end):
                if sub == b"ihdr":
                    height, width = _u32(d, s), _u32(d, s + 4)
                    sizes.append((width, height))
        elif kind == b"jp2c":
            size = _j2k(d, start)
            if size:
                sizes.append(size)
            break
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def _avif(d: bytes) -> tuple[int, int] | None:
    """The largest ``ispe`` (image spatial extent) property of a HEIF/AVIF file: its grid
    image's size where tiles make one."""
    sizes = []

    def walk(start: int, end: int) -> None:
        for kind, s, e in _boxes(d, start, end):
            if kind == b"meta":
                walk(s + 4, e)  # a full box: version and flags first
            elif kind in (b"iprp", b"ipco"):
                walk(s, e)
            elif kind == b"ispe":
                sizes.append((_u32(d, s + 4), _u32(d, s + 8)))

    walk(0, len(d))
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def _format(d: bytes) -> str | None:
    """The format of the bytes ``d`` start with (16 are enough), by its signature."""
    if d[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if d[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if d[:2] == b"BM":
        return "BMP"
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        return "WebP"
    if d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if d[:1] == b"P" and d[1:2] in b"1234567Ff" and d[1:2] and d[2:3].isspace():
        return "PNM"
    if d[:4] == b"\x59\xa6\x6a\x95":
        return "Sun raster"
    if d[:2] == b"#?":
        return "Radiance HDR"
    if d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return "JPEG 2000"
    if d[:4] == b"\xff\x4f\xff\x51":
        return "J2K"
    if d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis", b"mif1", b"msf1", b"heic", b"heix"):
        return "AVIF"
    return None


_PARSERS = {
    "PNG": _png,
    "JPEG": _jpeg,
    "BMP": _bmp,
    "GIF": _gif,
    "WebP": _webp,
    "TIFF": _tiff,
    "PNM": _pnm,
    "Sun raster": lambda d: (_u32(d, 4), _u32(d, 8)),
    "Radiance HDR": _hdr,
    "JPEG 2000": _jp2,
    "J2K": _j2k,
    "AVIF": _avif,
}


def image_size(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int, str] | None:
    """(width, height, format) from an encoded image's header, without decoding it; ``None``
    when the bytes are not one of the formats this reads (above) or the header is cut short
    or inconsistent. Never raises."""
    try:
        d = data if isinstance(data, bytes) else memoryview(data).cast("B")  # no copy of the file
        kind = _format(bytes(d[:16]))
    except (TypeError, ValueError):  # not bytes-like, or not contiguous
        return None
    if kind is None:
        return None
    try:
        size = _PARSERS[kind](d)
    except (struct.error, IndexError, ValueError, KeyError, RecursionError):
        return None
    if size is None or not all(isinstance(v, int) and 0 < v for v in size):
        return None
    return size[0], size[1], kind


# ---------------------------------------------------------------------------------- decode
def decode_image(data: Any, max_pixels: int = MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Encoded image bytes as BGR uint8 (H, W, 3): the header's size is checked against
    ``max_pixels`` first, and only then is the image decoded.

    Raises:
        EmoError: not an image (or a format whose header this does not read), over the limit,
            or corrupt.
    """
    try:
        buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    except (TypeError, ValueError):
        raise EmoError(f"cannot read {name}: give the file's bytes") from None
    if buf.dtype != np.uint8:
        raise EmoError(f"cannot read {name}: give the file's bytes (uint8), not {buf.dtype}")
    if not buf.size:
        raise EmoError(f"cannot read {name}: the file is empty")
    size = image_size(np.ascontiguousarray(buf))
    if size is None:
        raise EmoError(f"cannot read {name}: {NOT_AN_IMAGE}")
    width, height, kind = size
    check_pixels(width, height, max_pixels, f"image {name}")
    # imdecode, not imread: imread cannot open non-ASCII paths on Windows.
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.ndim != 3 or not image.size:
        raise EmoError(f"cannot read {name}: a corrupt {kind} file, or one this OpenCV cannot decode")
    check_pixels(image.shape[1], image.shape[0], max_pixels, f"image {name}")  # a header that lied
    return image


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as BGR uint8 (H, W, 3), its size checked against ``max_pixels`` before it
    is decoded.

    Raises:
        EmoError: the file is missing or unreadable, not an image emo reads, over the limit, or
            corrupt.
    """
    max_pixels = check_max_pixels(max_pixels)
    path = Path(path)
    name = shown(path)
    try:
        size = os.stat(path).st_size
        if not path.is_file():
            raise EmoError(f"image {name} is not a file: give an image file")
        limit = BYTES_PER_PIXEL * max_pixels + FILE_SLACK
        if size > limit:
            raise EmoError(
                f"image {name} is {size / 1e6:,.0f} MB, more than an image within the "
                f"{millions(max_pixels)} pixel limit can be ({limit / 1e6:,.0f} MB): downscale it, or "
                "raise the limit (max_pixels= in Python, --max-pixels on the command line)"
            )
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise EmoError(f"image {name} not found: check the path") from None
    except OSError as err:  # permission denied, a file that vanished, a name too long
        raise EmoError(f"cannot read {name}: {os_reason(err)}") from None
    except ValueError as err:  # a NUL character in the name
        raise EmoError(f"cannot read {name}: {err}") from None
    return decode_image(data, max_pixels, name)


# ------------------------------------------------------------------------- arrays and PIL
def _blocks(image: np.ndarray) -> Iterator[slice]:
    """Slices of ``image``'s first axis of about ``CHUNK_ELEMENTS`` elements each: views of any
    strided array (a broadcast or transposed one included), never a copy of the whole."""
    per_row = max(1, image.size // max(1, image.shape[0]))
    rows = max(1, CHUNK_ELEMENTS // per_row)
    for start in range(0, image.shape[0], rows):
        yield slice(start, start + rows)


def _finite_range(image: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite values of a float array, a block at a time; ``None``: none."""
    lo, hi = np.inf, -np.inf
    for rows in _blocks(image):
        part = image[rows].astype(np.float64)
        part = part[np.isfinite(part)]
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    return (lo, hi) if lo <= hi else None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An array's values as uint8 (the same shape), converted a block of rows at a time, so the
    temporaries stay ~32 MB whatever the array's size or type.

    - uint8 as is; bool as 0 and 255;
    - integers: as they are when within 0..255, else 16-bit values (0..65535, as a 16-bit PNG
      holds them) shifted right by 8 bits (what OpenCV does when it reads such a file), else
      stretched from their range to 0..255;
    - floats: on the 0..1 scale when within it, as they are within 0..255, else stretched from
      their finite range; NaN as 0, infinities as 0 or 255.

    Raises:
        EmoError: an empty array, or values that are not numbers (complex, objects, strings).
    """
    dtype = image.dtype
    if dtype == np.uint8:
        return image
    if dtype.kind not in "buif":
        raise EmoError(
            f"image of dtype {dtype} is not supported: give uint8, other integers, or floats (0..1 or 0..255)"
        )
    if not image.size:
        raise EmoError(f"image of shape {image.shape} is empty")
    image = np.atleast_1d(image)
    out = np.empty(image.shape, np.uint8)
    if dtype.kind == "b":
        for rows in _blocks(image):
            out[rows] = image[rows]
        out *= np.uint8(255)
        return out
    shift = False
    if dtype.kind in "ui":
        lo, hi = int(image.min()), int(image.max())
        if lo >= 0 and hi <= 255:
            scale, offset = 1.0, 0.0
        elif lo >= 0 and hi <= 65535:
            shift = True
        else:  # stretched (halves: hi - lo cannot overflow a float)
            scale, offset = (127.5 / (hi / 2 - lo / 2) if hi > lo else 0.0), float(lo)
    else:
        with np.errstate(all="ignore"):
            lo, hi = _finite_range(image) or (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            scale, offset = 255.0, 0.0
        elif lo >= 0 and hi <= 255:
            scale, offset = 1.0, 0.0
        else:
            scale, offset = (127.5 / (hi / 2 - lo / 2) if hi > lo else 0.0), lo
    with np.errstate(all="ignore"):  # NaN and infinities are mapped below, not warned about
        for rows in _blocks(image):
            if shift:
                out[rows] = image[rows] >> 8
                continue
            part = image[rows].astype(np.float64)
            part *= 0.5  # halves (exact): x - offset cannot overflow for any pair of float64s
            part -= offset * 0.5
            part *= 2 * scale
            np.nan_to_num(part, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
            out[rows] = np.clip(np.rint(part), 0, 255)
    return out


def _pil_array(image: Any, max_pixels: int) -> np.ndarray:
    """A PIL image as grey (H, W) or BGR (H, W, 3) uint8, whatever its mode, refused over
    ``max_pixels`` before it is converted (or, for a file opened lazily, decoded).

    16-bit modes (``I;16``, ...) are shifted right by 8 bits, as OpenCV reads the same file;
    ``I`` (32-bit integers) and ``F`` (floats) go through ``to_uint8``; ``1``, ``L`` are grey;
    every other mode (``P``, ``LA``, ``RGBA``, ``CMYK``, ``YCbCr``, ...) is converted to RGB,
    alpha dropped as OpenCV drops it from a file.
    """
    try:
        width, height = (int(v) for v in image.size)
        mode = str(image.mode)
    except Exception:  # noqa: BLE001  (an object that only looks like a PIL image)
        raise EmoError(f"cannot read an image from {type(image).__name__}: not a PIL image") from None
    check_pixels(width, height, max_pixels, f"PIL image ({mode})")
    try:
        with warnings.catch_warnings():  # palette transparency, decompression bomb notes
            warnings.simplefilter("ignore")
            if mode.startswith("I;16") or mode in ("I", "F", "1", "L"):
                array = np.asarray(image)
                if array.ndim == 3 and array.shape[2] == 1:
                    array = array[..., 0]
                array = to_uint8(array.astype(array.dtype.newbyteorder("=")))
            else:
                try:
                    array = np.asarray(image.convert("RGB"))[..., ::-1]  # PIL is RGB
                except ValueError:  # a mode Pillow cannot convert (La): its first band, grey
                    array = np.asarray(image)
                    array = to_uint8(array[..., 0] if array.ndim == 3 else array)
    except EmoError:
        raise
    except Exception as err:  # noqa: BLE001  (Pillow's own errors: truncated files, odd modes)
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise EmoError(f"cannot read the PIL image (mode {mode}): {reason}") from None
    if array.ndim not in (2, 3) or not array.size:
        raise EmoError(f"cannot read the PIL image (mode {mode}, size {width}x{height}): it is empty")
    return np.ascontiguousarray(array)


def _array(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """A numpy image checked (shape, type, pixel limit) before anything is converted."""
    image = np.asarray(image)  # subclasses (masked arrays, matrices) as plain arrays
    if image.dtype.kind not in "buif":
        raise EmoError(
            f"image of dtype {image.dtype} is not supported: give uint8, other integers, or floats (0..1 or 0..255)"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or not image.size:
        raise EmoError(f"image of shape {image.shape}: give (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA")
    check_pixels(image.shape[1], image.shape[0], max_pixels, "image array")
    return image


def to_bgr(image: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, a PIL image or a numpy array (grey, BGR or BGRA; any integer or float type) as
    BGR uint8 (H, W, 3), refused over ``max_pixels`` before it is decoded or converted."""
    max_pixels = check_max_pixels(max_pixels)
    if isinstance(image, (str, Path)):
        return read_image(image, max_pixels)
    if type(image).__module__.startswith("PIL."):
        image = _pil_array(image, max_pixels)
    elif not isinstance(image, np.ndarray):
        raise EmoError(
            f"cannot read an image from {type(image).__name__}: give a path, numpy array or PIL image"
        )
    image = np.ascontiguousarray(to_uint8(_array(image, max_pixels)))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image


def to_grey(image: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any input ``to_bgr`` accepts, as grey uint8 (H, W)."""
    max_pixels = check_max_pixels(max_pixels)
    if type(image).__module__.startswith("PIL."):
        image = _pil_array(image, max_pixels)
    if isinstance(image, np.ndarray):
        image = _array(image, max_pixels)
        if image.ndim == 2:
            return np.ascontiguousarray(to_uint8(image))
    return cv2.cvtColor(to_bgr(image, max_pixels), cv2.COLOR_BGR2GRAY)


# ---------------------------------------------------------------------------------- outputs
def check_output(
    path: str | Path,
    what: str,
    inputs: Sequence[str | Path] = (),
    folder: bool = False,
    overwrite: bool = True,
) -> Path:
    """Check, before any work, that ``path`` can be written: not a folder where a file is meant
    (nor a file where a folder is), not one of ``inputs``, its folder there or creatable, and
    writable. Nothing is created.

    Args:
        what: the option or argument that named it, for the message (``--csv``).
        folder: ``path`` is a folder to write files into.
        overwrite: whether an existing file may be replaced.

    Raises:
        EmoError: one line naming the problem and the fix.
    """
    path = Path(path)
    name = shown(path)
    try:
        if folder:
            if path.exists() and not path.is_dir():
                raise EmoError(f"{what} {name} is a file: give a folder")
        else:
            if path.is_dir():
                raise EmoError(f"{what} {name} is a folder: give a file name")
            if path.exists() and not overwrite:
                raise EmoError(f"{what} {name} exists: choose another name, or remove it")
            for source in inputs:
                source = Path(source)
                if exists(source) and path.exists() and os.path.samefile(source, path):
                    raise EmoError(f"{what} {name} is an input: choose another name")
        if len(path.name.encode()) > 255:  # where the system gives no NAME_MAX, most allow 255
            raise OSError(errno.ENAMETOOLONG, "name too long")
        existing = path if folder and path.exists() else path.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise EmoError(f"{what} {name}: {shown(existing)} is a file, not a folder")
        if not os.access(path if folder and path.exists() else existing, os.W_OK | os.X_OK):
            raise EmoError(
                f"{what} {name}: cannot write to {shown(existing)}: choose a folder you can write to"
            )
    except OSError as err:
        raise EmoError(f"{what} {name}: {os_reason(err)}: choose another path") from None
    except ValueError as err:  # NUL characters
        raise EmoError(f"{what} {name}: {err}") from None
    return path


def make_folder(path: str | Path, what: str) -> Path:
    """Create folder ``path`` (and its parents), or raise a one-line :class:`EmoError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EmoError(
            f"{what}: cannot create {shown(path)} ({os_reason(err)}): choose a folder you can write to"
        ) from None
    return path


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: str | Path, what: str = "output") -> Path:
    """An empty temporary file in ``path``'s folder (created if need be), named
    ``.<stem>.<random>.tmp<suffix>`` (the suffix kept: OpenCV picks formats by it), with the
    permissions a new file gets there (mkstemp's own are 0600)."""
    path = Path(path)
    make_folder(path.parent, what)
    try:
        stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in path.stem[:40])
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as err:
        raise EmoError(f"{what}: cannot write to {shown(path.parent)} ({os_reason(err)})") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str = "output") -> Iterator[Path]:
    """A temporary file in ``path``'s folder (same suffix) to write to; when the block ends
    without an exception it replaces ``path`` in one step (``os.replace``), else it is removed.
    Readers never see a half-written ``path``.

    Raises:
        EmoError: the folder cannot be created or written, or the file is missing or empty
            after the block (a writer that failed without saying so).
    """
    path = Path(path)
    tmp_path = temp_beside(path, what)
    try:
        yield tmp_path
        if not tmp_path.is_file() or tmp_path.stat().st_size == 0:
            raise EmoError(f"{what}: could not write {shown(path)} (nothing was written)")
        os.replace(tmp_path, path)
    except OSError as err:
        raise EmoError(f"{what}: could not write {shown(path)} ({os_reason(err)})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes, what: str = "output") -> Path:
    """``data`` to ``path`` atomically, verified by its size once in place."""
    path = Path(path)
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    try:
        written = path.stat().st_size
    except OSError as err:
        raise EmoError(f"{what}: {shown(path)} is missing after writing ({os_reason(err)})") from None
    if written != len(data):
        raise EmoError(f"{what}: {shown(path)} has {written} bytes, not {len(data)}: check the disk")
    return path


def write_image(path: str | Path, image: np.ndarray, what: str = "output") -> Path:
    """``image`` written by ``cv2.imwrite`` (the format by ``path``'s suffix: ``.png``, ``.jpg``,
    ...) to a temporary file beside ``path``, its result and header checked, then moved into place.

    Raises:
        EmoError: OpenCV could not write it (a suffix it cannot encode, a full disk), or the
            file it wrote is not the image.
    """
    path = Path(path)
    with atomic_path(path, what) as tmp:
        try:
            ok = cv2.imwrite(str(tmp), image)
        except cv2.error:
            ok = False
        if not ok:
            raise EmoError(
                f"{what}: could not write {shown(path)} (OpenCV could not write it): "
                "name it .png or .jpg, in a folder you can write to"
            )
        with open(tmp, "rb") as f:
            size = image_size(f.read(1 << 16))
        if size is not None and size[:2] != (image.shape[1], image.shape[0]):
            raise EmoError(f"{what}: could not write {shown(path)} (the file written is {size[0]}x{size[1]})")
    return path
