"""Fixtures: small synthetic FER-format data sets and Hydra configs composed as the CLI would."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, open_dict

from emo.cli import compose
from emo.data.fer2013 import FER2013_CLASSES

#: Rows per class in each split of the synthetic set.
PER_CLASS = {"Training": 12, "PublicTest": 4, "PrivateTest": 4}

REAL_DATA = Path(os.environ.get("EMO_TEST_DATA_DIR", "data/fer2013"))


def synthetic_rows(seed: int = 0) -> list[tuple[int, np.ndarray, str]]:
    """FER-format rows whose class is learnable: a bright patch at a class-specific place."""
    rng = np.random.default_rng(seed)
    rows = []
    for usage, n in PER_CLASS.items():
        for label in range(len(FER2013_CLASSES)):
            for _ in range(n):
                img = rng.integers(0, 120, size=(48, 48), dtype=np.uint8)
                r, c = divmod(label, 3)
                img[4 + 14 * r : 14 + 14 * r, 4 + 14 * c : 14 + 14 * c] = 250
                rows.append((label, img, usage))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for label, img, usage in rows:
            w.writerow([label, " ".join(map(str, img.ravel())), usage])
    return path


@pytest.fixture(scope="session")
def fer_rows():
    return synthetic_rows()


@pytest.fixture(scope="session")
def fer_dir(tmp_path_factory, fer_rows) -> Path:
    """A data directory holding a synthetic fer2013.csv (140 train / 28 val / 28 test rows)."""
    root = tmp_path_factory.mktemp("fer2013")
    write_csv(root / "fer2013.csv", fer_rows)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("EMO_DATA_DIR", raising=False)


def compose_cfg(
    overrides: list[str], out_dir: Path, data_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with CLI-style overrides, writing into ``out_dir``."""
    cfg = compose([f"data.data_dir={data_dir}", *overrides], config_name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.data.num_workers = 0
        if "trainer" in cfg:
            cfg.trainer.accelerator = "cpu"
        if cfg.get("callbacks"):
            cfg.callbacks.progress_bar = None  # keep test logs readable
            if not any("ema" in o for o in overrides) and "ema" in cfg.callbacks:
                # A ~2-epoch average never leaves the random start in a run of a few steps;
                # tests that are about EMA ask for it (callbacks.ema.decay=...).
                cfg.callbacks.ema = None
    return cfg


@pytest.fixture
def make_cfg(tmp_path, fer_dir):
    def make(*overrides: str, config_name: str = "train", out_dir: Path | None = None) -> DictConfig:
        return compose_cfg(list(overrides), out_dir or tmp_path, fer_dir, config_name)

    return make


def real_data_or_skip() -> Path:
    from emo.data.fer2013 import CSV_NAMES

    if not any((REAL_DATA / n).is_file() for n in CSV_NAMES):
        pytest.skip(f"real FER-2013 not found in {REAL_DATA} (set EMO_TEST_DATA_DIR)")
    return REAL_DATA
