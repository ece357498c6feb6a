"""The README's numbers of the shipped models are the ones emo/weights/index.json records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emo import weights

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {
    "PublicTest acc": ("publictest", "accuracy"),
    "PublicTest agreement": ("publictest", "agreement"),
    "PrivateTest acc": ("privatetest", "accuracy"),
    "PrivateTest agreement": ("privatetest", "agreement"),
}


def models_table(text: str) -> list[dict[str, str]]:
    """The rows of the README's table of shipped models (the one with an "ONNX file" column)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |") and "ONNX file" in line)
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def percent(cell: str) -> float:
    return float(re.sub(r"[*%]", "", cell)) / 100


def test_the_readme_models_table_matches_the_index():
    index = weights.index()
    checked = set()
    for row in models_table((ROOT / "README.md").read_text()):
        name = re.search(r"`([a-z0-9_]+)`", row["model"]).group(1)
        if name not in index or not row["TTA"].startswith(index[name]["tta"]):
            continue  # a run that is not shipped, or the same weights with another TTA
        for column, (split, key) in COLUMNS.items():
            assert percent(row[column]) == pytest.approx(index[name][split][key], abs=0.00005), (name, column)
        assert row["ONNX file"] == f"{index[name]['megabytes']:.1f} MB", name
        checked.add(name)
    assert checked == {n for n, r in index.items() if r["labels"] == "fer2013"}  # every FER-2013 model
