"""Fixtures: small synthetic FER-format data sets and Hydra configs composed as the CLI would
(the helpers behind them are in tests/helpers.py).

The training stack is imported inside the fixtures that need it: the runtime tests
(``-m runtime``) also run in a venv of ``pip install .`` alone, which has no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from omegaconf import DictConfig


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_xdist_worker():
    """Under ``pytest -n N`` (pytest-xdist) each worker is a process of its own: one torch thread
    each keeps N workers from fighting over the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        try:
            import torch
        except ImportError:  # the runtime venv: onnxruntime's threads are set per session
            pass
        else:
            torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def fer_rows():
    from tests.helpers import synthetic_rows

    return synthetic_rows()


@pytest.fixture(scope="session")
def fer_dir(tmp_path_factory, fer_rows) -> Path:
    """A data directory holding a synthetic fer2013.csv (84 train / 28 val / 28 test rows)."""
    from tests.helpers import write_csv

    root = tmp_path_factory.mktemp("fer2013")
    write_csv(root / "fer2013.csv", fer_rows)
    return root


@pytest.fixture(scope="session")
def ferplus_dir(tmp_path_factory, fer_rows) -> Path:
    """The synthetic set with FER+ votes beside it (fer2013new.csv): some faces disagree."""
    from tests.helpers import write_csv, write_ferplus

    root = tmp_path_factory.mktemp("ferplus")
    write_csv(root / "fer2013.csv", fer_rows)
    write_ferplus(root / "fer2013new.csv", fer_rows)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fer_dir) -> tuple[Path, dict]:
    """One short cnn3 run (two epochs, TensorBoard logs, tested), shared by the tests that only
    read a run's outputs: its directory and what ``train`` returned. Do not write into it."""
    from emo.train import train
    from tests.helpers import compose_cfg

    run = tmp_path_factory.mktemp("trained_run")
    metrics = train(compose_cfg(["trainer.max_epochs=2", "data.batch_size=32"], run, fer_dir))
    return run, metrics


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, fer_dir, trained_run) -> list[str]:
    """Two briefly trained cnn3 checkpoints (different seeds: the shared run's 42, and 2)."""
    from emo.inference.backends import best_checkpoint
    from emo.train import train
    from tests.helpers import compose_cfg

    root = tmp_path_factory.mktemp("runs")
    paths = [json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"]]
    for seed in (2,):
        out = root / f"s{seed}"
        overrides = ["trainer.max_epochs=2", "~logger", "test=false", f"seed={seed}"]
        train(compose_cfg(overrides, out, fer_dir))
        paths.append(str(best_checkpoint(out)))
    return paths


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("EMO_DATA_DIR", raising=False)


@pytest.fixture
def make_cfg(tmp_path, fer_dir):
    from tests.helpers import compose_cfg

    def make(*overrides: str, config_name: str = "train", out_dir: Path | None = None) -> DictConfig:
        return compose_cfg(list(overrides), out_dir or tmp_path, fer_dir, config_name)

    return make


#: What the window tests need: a virtual X server, a screen grabber and a key sender.
X_TOOLS = ("Xvfb", "import", "xdotool")


def have_tkinter() -> bool:
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def display():
    """A virtual X server (Xvfb, 1024x768, 96 dpi) for the window tests: its DISPLAY name. Skips
    where the X tools or tkinter (the window of the headless OpenCV) are missing."""
    missing = [t for t in X_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian: apt-get install xvfb imagemagick xdotool)")
    if not have_tkinter():
        pytest.skip("needs tkinter for the window (Debian: apt-get install python3-tk)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-dpi", "96", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)
