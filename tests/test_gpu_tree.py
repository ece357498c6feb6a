"""research/gpu_tree.py: the tree shrinks to what a GPU call needs, and comes back whole."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from emo.paths import PACKAGE_DIR

spec = importlib.util.spec_from_file_location("gpu_tree", PACKAGE_DIR.parent / "research" / "gpu_tree.py")
gpu_tree = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_tree)

BIG = gpu_tree.BIG + 1


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path):
    files = {
        "runs/a/resume.ckpt": BIG,  # the run going to the GPU resumes from it
        "runs/targets/ens.pt": BIG,  # named in its command
        "runs/b/resume.ckpt": BIG,  # another run's
        "emo/weights/big.ckpt": BIG,
        "emo/data/targets/vgg_s.pt": BIG,  # cnn3's default targets: always kept
        "emo/small.py": 100,
    }
    for path, size in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x" * size)
    (tmp_path / ".gitignore").write_text("/.gpu-hidden/\n/.gpu/\n")
    (tmp_path / ".gpu").mkdir()
    (tmp_path / ".gpu" / "data.npz").write_bytes(b"d" * 1000)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    (tmp_path / "runs/c").mkdir()
    (tmp_path / "runs/c/resume.ckpt").write_bytes(b"x" * BIG)  # untracked: back from a GPU call
    return tmp_path


ENTRIES = [
    {"name": "a", "command": "python -m emo.train experiment=x model.distill_targets=runs/targets/ens.pt"},
    {"name": "b", "command": "python -m emo.train experiment=y"},
]


def test_hide_keeps_what_the_runs_read_and_restore_puts_everything_back(repo):
    before = gpu_tree.travelling(repo, [".gpu"])
    moved = gpu_tree.hide(repo, ENTRIES, ["a"])
    assert sorted(moved) == ["emo/weights/big.ckpt", "runs/b/resume.ckpt", "runs/c/resume.ckpt"]
    for kept in ("runs/a/resume.ckpt", "runs/targets/ens.pt", "emo/data/targets/vgg_s.pt"):
        assert (repo / kept).is_file()
    assert (repo / ".gpu-hidden/emo/weights/big.ckpt").stat().st_size == BIG
    assert gpu_tree.travelling(repo, [".gpu"]) == before - 3 * BIG  # hidden files do not travel
    assert gpu_tree.travelling(repo, []) == before - 3 * BIG - 1000  # nor .gpu unless carried
    assert sorted(gpu_tree.restore(repo)) == sorted(moved)
    assert git(repo, "status", "--porcelain") == "?? runs/c/\n" and not (repo / ".gpu-hidden").exists()
    no_run = sorted(gpu_tree.hide(repo, ENTRIES, []))  # a call that only stages .gpu keeps none
    assert no_run == sorted([*moved, "runs/a/resume.ckpt", "runs/targets/ens.pt"])


def test_hide_refuses_a_run_the_queue_does_not_know_and_restore_keeps_what_would_clash(repo):
    with pytest.raises(SystemExit, match="no run named c"):
        gpu_tree.hide(repo, ENTRIES, ["a", "c"])
    gpu_tree.hide(repo, ENTRIES, ["a"])
    (repo / "runs/b/resume.ckpt").write_bytes(b"new")  # written again meanwhile
    with pytest.raises(SystemExit, match="1 hidden files exist again .*runs/b/resume.ckpt"):
        gpu_tree.restore(repo)
    assert (repo / ".gpu-hidden/runs/b/resume.ckpt").stat().st_size == BIG  # kept, not overwritten
