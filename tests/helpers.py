"""Helpers shared by the test modules (import them from here; conftest.py holds only fixtures):
a small synthetic FER-format data set, Hydra configs composed as the command line would, and
ways to run an entry point in-process or, for the slow tests, as a user would in a subprocess."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from emo.cli import compose
from emo.data.fer2013 import FER2013_CLASSES
from emo.data.ferplus import FERPLUS_COLUMNS

ROOT = Path(__file__).resolve().parents[1]

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


#: The header of FER+'s fer2013new.csv.
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def votes_for(label: int, kind: int) -> list[int]:
    """Ten votes in FER+ column order: mostly the FER-2013 label; some faces disagree."""
    v = [0] * 10
    col = FERPLUS_COLUMNS.index(FER2013_CLASSES[label])
    if kind == 0:  # people agree
        v[col] = 8
        v[(col + 1) % 7] = 2
    elif kind == 1:  # people see another of the seven
        v[(col + 2) % 7] = 6
        v[col] = 4
    else:  # contempt majority: no people label among the seven
        v[FERPLUS_COLUMNS.index("contempt")] = 7
        v[col] = 3
    return v


def write_ferplus(path, rows) -> list[list[int]]:
    all_votes = []
    with open(path, "w") as f:
        f.write(FERPLUS_HEADER + "\n")
        for i, (label, _, usage) in enumerate(rows):
            v = votes_for(label, i % 3)
            all_votes.append(v)
            f.write(f"{usage},fer{i:07d}.png,{','.join(map(str, v))}\n")
    return all_votes


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
        if "plots" in cfg and not any(o.startswith("plots=") for o in overrides):
            cfg.plots = False  # ~1.5 s of figures per evaluation; tests that look at them ask
    return cfg


def real_data_or_skip() -> Path:
    from emo.data.fer2013 import CSV_NAMES

    if not any((REAL_DATA / n).is_file() for n in CSV_NAMES):
        pytest.skip(f"real FER-2013 not found in {REAL_DATA} (set EMO_TEST_DATA_DIR)")
    return REAL_DATA


def run_entry_point(cli: Callable[[], None], args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run a console entry point (``emo.train.cli``, ...) in this process with ``args`` as its
    command line; its exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["emo", *args])
    GlobalHydra.instance().clear()
    try:
        cli()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


def run_cli(
    *args: str, cwd: Path, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python ARGS`` in its own process group, killed whole (launcher workers, DDP ranks) on
    timeout. The timeout is generous: these take 10-25 s on an idle machine, many times that on
    a busy one."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    cmd = [sys.executable, *args]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a background thread, with emo-serve's
    settings (its read deadline and origin check meet a real browser's requests)."""

    def __init__(self, app):
        uvicorn = pytest.importorskip("uvicorn")
        from emo.inference import serve  # the serve extra: only the tests that serve need it

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(serve.server_config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
