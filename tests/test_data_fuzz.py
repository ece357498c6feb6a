"""Property tests (hypothesis) of the FER-2013 reader (``emo.data.fer2013``): whatever rows,
bytes, encodings, column orders, pixel strings, empty files or compressed garbage it is given,
``load_fer2013`` returns valid arrays or raises :class:`EmoError` with a one-line message,
nothing else; and well-formed rows, in any column order, come back exactly.

Bounded runs (``max_examples`` 60-100, no deadline, derandomised): seconds in all.
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emo.data.fer2013 import N_PIXELS, load_fer2013  # noqa: E402
from emo.errors import EmoError  # noqa: E402

FAST = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: a failure here is reproducible
)
USAGES = ("Training", "PublicTest", "PrivateTest")
#: How a pixel string is made (a kind and a seed, so hypothesis keeps small data and shrinks well).
PIXEL_KINDS = (
    "ok",
    "ok",
    "short",
    "long",
    "word",
    "negative",
    "big",
    "float",
    "plus",
    "unicode digits",
    "unicode space",
    "empty",
    "tabs",
    "huge field",
)


def pixel_string(kind: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    values = [str(v) for v in rng.integers(0, 256, N_PIXELS)]
    i = int(rng.integers(N_PIXELS))
    if kind == "short":
        values = values[: int(rng.integers(N_PIXELS))]
    elif kind == "long":
        values += values[: int(rng.integers(1, 50))]
    elif kind == "word":
        values[i] = "x7"
    elif kind == "negative":
        values[i] = "-3"
    elif kind == "big":
        values[i] = "99999999999999999999999"
    elif kind == "float":
        values[i] = "1.5"
    elif kind == "plus":
        values[i] = "+5"
    elif kind == "unicode digits":
        values[i] = "\u0661\u0662"  # Arabic-Indic 12: a digit to the regex, not to NumPy
    elif kind == "empty":
        return ""
    elif kind == "huge field":
        return "1 " * 70_000  # over the csv module's field size limit
    sep = {"unicode space": "\u2003", "tabs": "\t"}.get(kind, " ")
    return sep.join(values)


cells = st.one_of(
    st.text(max_size=12), st.integers(-10, 10).map(str), st.sampled_from([*USAGES, "Validation"])
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "emotion": st.one_of(st.integers(0, 6).map(str), st.integers(0, 6), cells),
            "pixels": st.tuples(st.sampled_from(PIXEL_KINDS), st.integers(0, 2**32 - 1)),
            "Usage": st.one_of(st.sampled_from(USAGES), cells),
            "extra": cells,
        }
    ),
    max_size=6,
)


def write_source(folder: Path, text: bytes, container: str) -> Path:
    """``text`` (the CSV's bytes) as fer2013.csv, fer2013.csv.gz or fer2013.tar.gz in ``folder``."""
    if container == "csv":
        path = folder / "fer2013.csv"
        path.write_bytes(text)
    elif container == "gz":
        path = folder / "fer2013.csv.gz"
        path.write_bytes(gzip.compress(text))
    else:
        path = folder / "fer2013.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("fer2013/fer2013.csv")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return path


def load_or_error(path: Path, cache: Path, on_bad_row: str = "error"):
    """What the reader makes of ``path``: valid arrays, or ``None`` after a one-line EmoError."""
    try:
        arrays = load_fer2013(path, cache_dir=cache, on_bad_row=on_bad_row)
    except EmoError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, message[:500]
        assert len(message) < 600 + len(str(path)), message[:500]  # echoes of the input stay short
        return None
    n = len(arrays)
    assert n >= 1
    assert arrays.images.shape == (n, 48, 48) and arrays.images.dtype == np.uint8
    assert arrays.labels.shape == (n,) and arrays.labels.min() >= 0 and arrays.labels.max() <= 6
    assert arrays.split.shape == (n,) and set(np.unique(arrays.split)) <= {0, 1, 2}
    return arrays


@FAST
@given(
    rows=rows,
    order=st.permutations(["emotion", "pixels", "Usage", "extra"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]),
    container=st.sampled_from(["csv", "gz", "tar"]),
    on_bad_row=st.sampled_from(["error", "skip"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
)
def test_random_rows_give_arrays_or_one_line_errors(rows, order, encoding, container, on_bad_row, quoting):
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=quoting)
    writer.writerow(order)
    for row in rows:
        cells = {**row, "pixels": pixel_string(*row["pixels"])}
        writer.writerow([cells[c] for c in order])
    text = buf.getvalue().encode(encoding, errors="replace")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_source(Path(tmp), text, container)
        load_or_error(path, Path(tmp) / "cache", on_bad_row)


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: b"emotion,pixels,Usage\n" + b),
        st.text(max_size=300).map(lambda t: ("emotion,pixels,Usage\r\n" + t).encode()),
        st.just(b""),
        st.just(b"\xef\xbb\xbf"),  # a BOM and nothing else
        st.just(b"emotion,pixels,Usage\n"),  # a header and no rows
    ),
    name=st.sampled_from(["fer2013.csv", "fer2013.csv.gz", "fer2013.tar.gz"]),
)
def test_garbage_files_give_one_line_errors(data, name):
    """Bytes that are no CSV, no gzip stream, no tar archive: each named as the reader expects."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        load_or_error(path, Path(tmp) / "cache")


@FAST
@given(
    data=st.binary(min_size=1, max_size=200),
    keep=st.integers(0, 400),
    container=st.sampled_from(["gz", "tar"]),
)
def test_damaged_archives_give_one_line_errors(data, keep, container):
    """A valid gzip or tar.gz cut short or with garbage spliced in."""
    text = b"emotion,pixels,Usage\n" + f"3,{pixel_string('ok', 0)},Training\n".encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_source(Path(tmp), text, container)
        raw = path.read_bytes()
        path.write_bytes(raw[:keep] + data + raw[keep + len(data) :])
        load_or_error(path, Path(tmp) / "cache")


@FAST
@given(
    faces=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 2**32 - 1), st.sampled_from(USAGES)),
        min_size=1,
        max_size=5,
    ),
    order=st.permutations(["emotion", "pixels", "Usage", "extra"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    bom=st.booleans(),
)
def test_well_formed_rows_in_any_column_order_come_back_exactly(faces, order, quoting, bom):
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=quoting)
    writer.writerow(order)
    for label, seed, usage in faces:
        cells = {"emotion": label, "pixels": pixel_string("ok", seed), "Usage": usage, "extra": "x, y"}
        writer.writerow([cells[c] for c in order])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fer2013.csv"
        path.write_bytes(("\ufeff" if bom else "").encode() + buf.getvalue().encode())
        arrays = load_or_error(path, Path(tmp) / "cache")
    assert arrays is not None
    expected = np.stack([np.array(pixel_string("ok", s).split(), dtype=np.uint8) for _, s, _ in faces])
    np.testing.assert_array_equal(arrays.images.reshape(len(faces), -1), expected)
    assert arrays.labels.tolist() == [label for label, _, _ in faces]
    assert arrays.split.tolist() == [USAGES.index(u) for _, _, u in faces]
