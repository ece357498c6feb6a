"""FER+ (Barsoum et al. 2016): ten annotators' votes for every FER-2013 face.

``fer2013new.csv`` has one row per ``fer2013.csv`` row, in the same order, with columns
``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``.
emo uses the votes two ways:

* **agreement with people**: a face's *people label* is its most-voted FER+ category (ties go to
  the earlier column above, the order the file lists them in), kept when that category is one of
  the model's classes (so contempt, unknown and no-face majorities drop out). Accuracy against it
  is the yardstick of what users see (3,519 of the 3,589 PrivateTest faces count).
* **FER+ labels** (``data.labels=ferplus``): eight classes (emo's seven + contempt) by the FER+
  authors' protocol: single votes are dropped as noise, a face keeps its majority category only
  when that holds more than half of the remaining votes, and faces whose category is unknown or
  no-face go; ``ferplus_probabilities`` gives the vote distribution (their "probabilistic" scheme).
* **soft targets**: ``mix_targets`` blends a one-hot FER-2013 label with the vote distribution
  over the model's classes (``data.ferplus_mix``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo.errors import EmoError

FERPLUS_NAME = "fer2013new.csv"
#: The vote columns in the file's order, named in emo's vocabulary (emo's seven + contempt).
FERPLUS_COLUMNS = (
    "neutral",
    "happy",
    "surprise",
    "sad",
    "angry",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "no_face",
)
#: FER+'s eight emotion classes, in emo's vocabulary and order (emo's seven, then contempt).
FERPLUS_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")
_HEADER = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "nf",
)
_USAGES = ("Training", "PublicTest", "PrivateTest")


@dataclass(frozen=True)
class FerPlusVotes:
    """Votes (N, 10) uint8 in ``FERPLUS_COLUMNS`` order and each row's FER-2013 ``Usage``."""

    votes: np.ndarray
    usage: np.ndarray  # (N,) str
    source: str

    def __len__(self) -> int:
        return len(self.votes)


def find_ferplus(data_dir: str | os.PathLike) -> Path | None:
    """``fer2013new.csv`` beside FER-2013 (inside ``data_dir``, or next to the file it names)."""
    root = Path(data_dir).expanduser()
    for folder in (root, root.parent) if root.is_file() else (root,):
        if (folder / FERPLUS_NAME).is_file():
            return folder / FERPLUS_NAME
    return None


def load_ferplus(path: str | os.PathLike) -> FerPlusVotes:
    """Read ``fer2013new.csv``.

    Raises:
        EmoError: the file is missing or is not FER+ (wrong columns, a malformed vote row).
    """
    path = Path(path)
    hint = "get fer2013new.csv from github.com/microsoft/FERPlus and put it beside fer2013.csv"
    if not path.is_file():
        raise EmoError(f"FER+ votes {path} not found: {hint}")
    votes, usage = [], []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if tuple(header[2:12]) != _HEADER or header[:1] != ["usage"]:
            raise EmoError(f"{path} is not FER+ (columns {header[:12]}): {hint}")
        for line, row in enumerate(reader, start=2):
            try:
                v = [int(float(x)) for x in row[2:12]]
                if len(v) != 10 or row[0] not in _USAGES or min(v) < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise EmoError(f"{path}, line {line}: not a FER+ vote row ({','.join(row)[:60]})") from None
            votes.append(v)
            usage.append(row[0])
    return FerPlusVotes(np.asarray(votes, dtype=np.uint8), np.asarray(usage), str(path))


def people_labels(votes: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Each face's most-voted category as an index into ``class_names``; -1 where it is not one.

    Ties go to the earlier FER+ column (neutral, happy, surprise, ...), so the result does not
    depend on ``class_names``' order.
    """
    top = np.asarray(votes).argmax(1)  # first maximum wins
    lookup = np.array([class_names.index(c) if c in class_names else -1 for c in FERPLUS_COLUMNS])
    return lookup[top].astype(np.int64)


def _denoised(votes: np.ndarray) -> np.ndarray:
    """Votes with single votes removed (the FER+ authors' outlier rule), (N, 10) float32."""
    v = np.asarray(votes, dtype=np.float32)
    return np.where(v <= 1, 0.0, v).astype(np.float32)


def ferplus_majority(votes: np.ndarray, class_names: Sequence[str] = FERPLUS_CLASSES) -> np.ndarray:
    """FER+ majority labels as indices into ``class_names``; -1 for faces the protocol drops
    (no category above half the votes, an unknown or no-face majority, or a class not kept)."""
    v = _denoised(votes)
    top = v.argmax(1)
    clear = v.max(1) > 0.5 * v.sum(1)
    lookup = np.array([class_names.index(c) if c in class_names else -1 for c in FERPLUS_COLUMNS])
    return np.where(clear, lookup[top], -1).astype(np.int64)


def ferplus_probabilities(votes: np.ndarray, class_names: Sequence[str] = FERPLUS_CLASSES) -> np.ndarray:
    """The FER+ vote distribution over ``class_names`` (single votes dropped), (N, C) float32."""
    return vote_distribution(_denoised(votes), class_names)


def vote_distribution(votes: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Votes for ``class_names`` only, normalised per face (N, C) float32; zeros where none."""
    cols = [FERPLUS_COLUMNS.index(c) for c in class_names]
    v = np.asarray(votes, dtype=np.float32)[:, cols]
    total = v.sum(1, keepdims=True)
    return np.divide(v, total, out=np.zeros_like(v), where=total > 0)


def mix_targets(labels: np.ndarray, votes: np.ndarray, class_names: Sequence[str], beta: float) -> np.ndarray:
    """(1 - beta) * one-hot(label) + beta * vote distribution over ``class_names``, (N, C) float32.

    Faces with no vote for any of the classes keep their one-hot label (beta = 0 for them).
    """
    if not 0.0 <= beta <= 1.0:
        raise EmoError(f"data.ferplus_mix={beta} is not valid: give a weight between 0 and 1")
    onehot = np.eye(len(class_names), dtype=np.float32)[np.asarray(labels)]
    dist = vote_distribution(votes, class_names)
    has_votes = dist.sum(1, keepdims=True) > 0
    return np.where(has_votes, (1 - beta) * onehot + beta * dist, onehot).astype(np.float32)


def check_aligned(ferplus: FerPlusVotes, split_codes: np.ndarray, usage_to_split: dict[str, int]) -> None:
    """FER+ rows must match FER-2013's row for row (same count, same Usage)."""
    codes = np.array([usage_to_split[u] for u in ferplus.usage])
    if len(codes) != len(split_codes) or not np.array_equal(codes, split_codes):
        raise EmoError(
            f"{ferplus.source} does not line up with FER-2013 ({len(codes)} vs {len(split_codes)} rows, "
            "or a different Usage order): FER+ needs the original fer2013.csv with every row kept "
            "(data.on_bad_row=error)"
        )
