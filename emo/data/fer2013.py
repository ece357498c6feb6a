"""Read FER-2013 from any of the layouts people download, into one uint8 array, cached.

Layouts, looked for in this order inside ``data_dir`` (``data_dir`` may also be the file itself):

* ``fer2013.csv``          the original Kaggle file: ``emotion,pixels,Usage``
* ``fer2013.csv.gz``       the same, gzip-compressed
* ``fer2013.tar.gz``       the Kaggle archive, holding ``fer2013/fer2013.csv``
* ``fer2013/fer2013.csv``  that archive, unpacked
* ``train/<class>/*.png|jpg`` and ``test/<class>/*.png|jpg``  the image-folder release
* ``fer2013.npz.xz``       emo's compact copy (``python -m emo.data.compact``), possibly of some
  splits only: small enough to carry to a GPU machine

Decoding the CSV takes seconds; the result is cached as an uncompressed ``.npz`` keyed by the
source's path, size and modification time, so a changed source is decoded again.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import tarfile
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo.errors import EmoError
from emo.inference.preprocess import FER2013_MEAN, FER2013_STD, IMAGE_SIZE  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

#: FER-2013's label order, as the ``emotion`` column encodes it (0..6). The single source of the
#: class names: everything else (configs, checkpoints, inference) derives from this tuple.
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
# IMAGE_SIZE, FER2013_MEAN and FER2013_STD (grey-level mean and standard deviation of the
# Training split on the 0..1 scale, measured; conf/data/fer2013.yaml states the same numbers, and
# a real-data test checks them) live with the runtime's preprocessing, which defaults to them.

#: Split codes stored in the cache. A layout without an official validation split stores only
#: TRAIN and TEST (``official_val=False``); the DataModule carves VAL out of TRAIN.
TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")
USAGE_TO_SPLIT = {"Training": TRAIN, "PublicTest": VAL, "PrivateTest": TEST}

CSV_NAMES = ("fer2013.csv", "fer2013.csv.gz", "fer2013.tar.gz", "fer2013/fer2013.csv")
COMPACT_NAME = "fer2013.npz.xz"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
DOWNLOAD_HINT = (
    "download fer2013.csv (or fer2013.tar.gz) from https://www.kaggle.com/c/"
    "challenges-in-representation-learning-facial-expression-recognition-challenge/data "
    "and put it there, or point data.data_dir / EMO_DATA_DIR at it"
)
CACHE_VERSION = 1


@dataclass(frozen=True)
class FerArrays:
    """Decoded FER-2013: images (N, 48, 48) uint8, labels (N,) int64 in FER-2013 order, split (N,)."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    source: str
    official_val: bool

    def __len__(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------------------------
# locating the source


def find_source(data_dir: str | os.PathLike) -> Path:
    """Return the FER-2013 file or image-folder root inside ``data_dir``, or raise EmoError."""
    root = Path(data_dir).expanduser()
    if root.is_file():
        return root
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    if (root / "train").is_dir():
        return root
    if (root / COMPACT_NAME).is_file():
        return root / COMPACT_NAME
    looked = ", ".join([*CSV_NAMES, "train/<class>/ + test/<class>/ image folders", COMPACT_NAME])
    where = root.resolve() if root.exists() else f"{root.resolve()} (does not exist)"
    raise EmoError(f"FER-2013 not found in {where}: looked for {looked}; {DOWNLOAD_HINT}")


def _fingerprint(source: Path) -> str:
    """Path, size and mtime of the source (every image file for a folder layout)."""
    files = [source] if source.is_file() else sorted(_image_files(source))
    h = hashlib.sha1(f"v{CACHE_VERSION}:{source.resolve()}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMO_CACHE_DIR", Path.home() / ".cache" / "emo")).expanduser()


# --------------------------------------------------------------------------------------------
# public entry point


def load_fer2013(
    data_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    on_bad_row: str = "error",
) -> FerArrays:
    """Load FER-2013 from ``data_dir``, decoding it once into ``cache_dir``.

    Args:
        data_dir: folder holding one of the supported layouts, or the CSV/archive itself.
        cache_dir: where the decoded ``.npz`` goes (default ``$EMO_CACHE_DIR`` or ``~/.cache/emo``).
        on_bad_row: ``"error"`` stops at the first malformed row with its file and line number;
            ``"skip"`` drops malformed rows and logs how many.
    """
    if on_bad_row not in ("error", "skip"):
        raise EmoError(f"data.on_bad_row={on_bad_row!r} is not valid: use 'error' or 'skip'")
    source = find_source(data_dir)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache = cache_dir / f"fer2013-{_fingerprint(source)}-{on_bad_row}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return FerArrays(z["images"], z["labels"], z["split"], str(source), bool(z["official_val"]))
        except (OSError, ValueError, KeyError):
            log.warning("cache %s is unreadable; decoding %s again", cache, source)

    log.info("decoding %s (once; cached in %s)", source, cache_dir)
    arrays = _decode(source, on_bad_row)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            images=arrays.images,
            labels=arrays.labels,
            split=arrays.split,
            official_val=arrays.official_val,
        )
        tmp.replace(cache)  # atomic: a killed run never leaves a half-written cache behind
    except OSError as err:
        log.warning("could not write the cache in %s (%s); decoding again next time", cache_dir, err)
    return arrays


def _decode(source: Path, on_bad_row: str) -> FerArrays:
    if source.is_dir():
        return _read_folders(source, on_bad_row)
    name = source.name.lower()
    if name.endswith(".npz.xz"):
        return read_compact(source)
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            return _read_tar(source, on_bad_row)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(source, "rt", encoding="utf-8-sig", newline="") as f:
            return _read_csv(f, str(source), on_bad_row, str(source))
    except UnicodeDecodeError as err:
        raise EmoError(
            f"{source}: not UTF-8 text ({err.reason} at byte {err.start:,}): save it as UTF-8, or download it again"
        ) from None
    except (OSError, EOFError, zlib.error, tarfile.TarError) as err:
        raise EmoError(f"{source}: cannot be read ({_one_line(err)}); download it again") from None


def _read_tar(source: Path, on_bad_row: str) -> FerArrays:
    with tarfile.open(source) as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith("fer2013.csv")), None)
        if member is None:
            raise EmoError(f"{source}: no fer2013.csv inside the archive; {DOWNLOAD_HINT}")
        raw = tar.extractfile(member)
        with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
            return _read_csv(f, f"{source}:{member.name}", on_bad_row, str(source))


def _short(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, for messages that echo what a file holds."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(err: BaseException, limit: int = 120) -> str:
    """An exception's message on one line (tarfile's list every compression it tried), cut short."""
    return _short(" ".join(str(err).split()), limit)


# --------------------------------------------------------------------------------------------
# compact copy


def write_compact(
    arrays: FerArrays, path: str | os.PathLike, splits: Iterable[int] = (TRAIN, VAL, TEST)
) -> Path:
    """Write the rows of ``splits`` as an xz-compressed ``.npz`` (``read_compact`` reads it)."""
    keep = np.isin(arrays.split, list(splits))
    buf = io.BytesIO()
    np.savez(
        buf,
        images=arrays.images[keep],
        labels=arrays.labels[keep].astype(np.int8),
        split=arrays.split[keep].astype(np.int8),
        official_val=arrays.official_val,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with lzma.open(tmp, "wb", preset=6) as f:
        f.write(buf.getbuffer())
    tmp.replace(path)
    return path


def read_compact(source: Path) -> FerArrays:
    try:
        with lzma.open(source, "rb") as f, np.load(io.BytesIO(f.read())) as z:
            images, labels, split = z["images"], z["labels"].astype(np.int64), z["split"].astype(np.int64)
            official_val = bool(z["official_val"])
    except (OSError, EOFError, ValueError, KeyError, lzma.LZMAError) as err:
        raise EmoError(f"{source}: not a readable compact FER-2013 copy ({err}); write it again") from None
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise EmoError(f"{source}: images are {images.dtype} {images.shape}, not uint8 (N, 48, 48)")
    if (
        len({len(images), len(labels), len(split)}) != 1
        or labels.min(initial=0) < 0
        or labels.max(initial=0) > 6
    ):
        raise EmoError(f"{source}: labels or splits do not match the images; write it again")
    return FerArrays(images, labels, split, str(source), official_val)


# --------------------------------------------------------------------------------------------
# CSV


def _read_csv(f: Iterable[str], name: str, on_bad_row: str, source: str) -> FerArrays:
    reader = csv.reader(f)
    try:
        header = [h.strip() for h in next(reader, [])]  # utf-8-sig has dropped a BOM
    except csv.Error as err:
        raise EmoError(f"{name}, line 1: {_one_line(err)}; is this the original fer2013.csv?") from None
    missing = {"emotion", "pixels", "Usage"} - set(header)
    if missing:
        shown = _short(",".join(header), 80).encode("unicode_escape").decode("ascii") or "(empty)"
        raise EmoError(
            f"{name}: header is {shown}, expected emotion,pixels,Usage; is this the original fer2013.csv?"
        )
    i_label, i_pix, i_usage = header.index("emotion"), header.index("pixels"), header.index("Usage")
    images, labels, split, bad = [], [], [], 0
    rows = enumerate(reader, start=2)  # line 1 is the header
    while True:
        try:
            line, row = next(rows)
        except StopIteration:
            break
        except csv.Error as err:  # not a row at all (a field over the csv module's size limit)
            raise EmoError(
                f"{name}, line {reader.line_num}: {_one_line(err)}; is this the original fer2013.csv?"
            ) from None
        if not row:
            continue
        try:
            label, pixels, usage = _parse_row(row, i_label, i_pix, i_usage)
        except ValueError as err:
            if on_bad_row == "skip":
                bad += 1
                continue
            raise EmoError(f"{name}, line {line}: {err} (or set data.on_bad_row=skip)") from None
        images.append(pixels)
        labels.append(label)
        split.append(usage)
    if bad:
        log.warning("%s: skipped %d malformed row(s) (data.on_bad_row=skip)", name, bad)
    if not images:
        raise EmoError(f"{name}: no valid rows; {DOWNLOAD_HINT}")
    return FerArrays(
        np.stack(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
        np.asarray(labels, dtype=np.int64),
        np.asarray(split, dtype=np.int8),
        source,
        official_val=True,
    )


#: A whole number as the CSV writes it (ASCII digits: ``\d`` would also take other scripts' digits).
_INTEGER = re.compile(r"-?[0-9]+")


def _parse_row(row: list[str], i_label: int, i_pix: int, i_usage: int) -> tuple[int, np.ndarray, int]:
    if len(row) <= max(i_label, i_pix, i_usage):
        raise ValueError(f"expected 3 columns, got {len(row)}")
    text_label, text_pix, usage = row[i_label].strip(), row[i_pix], row[i_usage].strip()
    if not _INTEGER.fullmatch(text_label) or not 0 <= int(text_label) < len(FER2013_CLASSES):
        raise ValueError(f"emotion {_short(text_label)!r} is not a label in 0..{len(FER2013_CLASSES) - 1}")
    if usage not in USAGE_TO_SPLIT:
        raise ValueError(f"Usage {_short(usage)!r} is not one of {', '.join(USAGE_TO_SPLIT)}")
    try:  # fast path; older NumPy warns and stops at the first non-number, newer raises
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.fromstring(text_pix, dtype=np.int64, sep=" ")
    except ValueError:
        pixels = np.empty(0, dtype=np.int64)
    if pixels.size != N_PIXELS:  # diagnose the slow way only on failure
        tokens = text_pix.split()
        if len(tokens) != N_PIXELS:
            raise ValueError(f"expected {N_PIXELS} pixel values, got {len(tokens)}")
        token = next((t for t in tokens if not _INTEGER.fullmatch(t)), None)
        if token is not None:
            raise ValueError(f"pixel value {_short(token)!r} is not an integer")
        raise ValueError("pixel values must be whole numbers separated by spaces")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixel values must lie in 0..255")
    return int(text_label), pixels.astype(np.uint8), USAGE_TO_SPLIT[usage]


# --------------------------------------------------------------------------------------------
# image folders


def _image_files(root: Path) -> Iterator[Path]:
    for top in ("train", "test"):
        if (root / top).is_dir():
            for p in (root / top).rglob("*"):
                if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                    yield p


def _sort_key(p: Path) -> tuple:
    # Kaggle names images Training_123.jpg: sort numerically, so the order is stable and
    # matches the CSV's order where the numbers are row indices.
    m = re.search(r"(\d+)$", p.stem)
    return (p.parent.name, int(m.group(1)) if m else -1, p.name)


def _read_folders(root: Path, on_bad_row: str) -> FerArrays:
    import cv2  # only the folder layout needs OpenCV

    files = sorted(_image_files(root), key=lambda p: (p.relative_to(root).parts[0], *_sort_key(p)))
    if not files:
        raise EmoError(f"{root}: train/ holds no {'/'.join(IMAGE_EXTS)} images; {DOWNLOAD_HINT}")
    prefixed = all(p.name.split("_", 1)[0] in USAGE_TO_SPLIT for p in files)
    images, labels, split, bad = [], [], [], 0
    for p in files:
        try:
            cls = p.parent.name.lower()
            if cls not in FER2013_CLASSES:
                raise ValueError(f"folder {cls!r} is not a class ({', '.join(FER2013_CLASSES)})")
            img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ValueError("not a readable image")
        except ValueError as err:
            if on_bad_row == "skip":
                bad += 1
                continue
            raise EmoError(f"{p}: {err} (or set data.on_bad_row=skip)") from None
        if img.shape != (IMAGE_SIZE, IMAGE_SIZE):
            img = cv2.resize(img, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        images.append(img)
        labels.append(FER2013_CLASSES.index(cls))
        if prefixed:
            split.append(USAGE_TO_SPLIT[p.name.split("_", 1)[0]])
        else:
            split.append(TRAIN if p.relative_to(root).parts[0] == "train" else TEST)
    if bad:
        log.warning("%s: skipped %d unreadable image(s) (data.on_bad_row=skip)", root, bad)
    if not prefixed:
        log.warning(
            "%s: file names carry no Training_/PublicTest_/PrivateTest_ prefix, so there is no "
            "official validation split; validation will be a seeded, stratified hold-out of train",
            root,
        )
    return FerArrays(
        np.stack(images),
        np.asarray(labels, dtype=np.int64),
        np.asarray(split, dtype=np.int8),
        str(root),
        official_val=prefixed,
    )
