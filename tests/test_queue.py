"""The training queue: every queued command composes today, resumability is judged in one line."""

from __future__ import annotations

import importlib.util
import shlex

import pytest

from emo.paths import PACKAGE_DIR
from emo.train import train
from emo.weights import pack

ROOT = PACKAGE_DIR.parent
spec = importlib.util.spec_from_file_location("train_queue", ROOT / "scripts" / "train_queue.py")
train_queue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_queue)


@pytest.mark.parametrize("entry", train_queue.load_queue(), ids=lambda e: e["name"])
def test_every_queued_command_composes(entry, make_cfg, tmp_path):
    overrides = shlex.split(entry["command"])[3:]
    cfg = make_cfg(*overrides, out_dir=tmp_path)
    assert cfg.trainer.max_epochs > 0 and entry.get("why")


def test_resumable_accepts_a_last_ckpt_and_explains_what_it_refuses(make_cfg, tmp_path):
    out = tmp_path / "run"
    train(make_cfg("trainer.max_epochs=1", "logger={}", "test=false", out_dir=out))
    last = out / "checkpoints" / "last.ckpt"
    assert train_queue.resumable(last) is None and train_queue.epoch_of(last) == 1
    slim = pack(last, tmp_path / "slim.ckpt")
    assert train_queue.resumable(slim) == "it holds weights only (no optimizer or loop state)"
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert "unreadable" in train_queue.resumable(tmp_path / "junk.ckpt")
