"""Make the working tree small enough to travel to a lent GPU machine, and put it back after.

    python research/gpu_tree.py hide vgg_fer_g1 resnet18_g1   # before the call
    python research/gpu_tree.py restore                       # after it: git status is clean again

The device tool sends the working tree (tracked files, and untracked ones git does not ignore)
with the carried paths, 64 MiB in all, and `.gpu/` (make gpu-bundle) takes ~60 MB of that, while
the committed weights and resume points are ~90 MB. `hide` moves every file the call would send
(tracked, or untracked and not ignored) over 64 KB into `.gpu-hidden/` (git-ignored, so it stays on this machine) except what training reads there:
the package's stored soft targets (`emo/data/targets/`, cnn3's default), and for the named queue
runs their `runs/NAME/resume.ckpt` and any file their command names (`init_from=...`,
`model.distill_targets=...`). It prints what will travel. Nothing is deleted: `restore` moves
every hidden file back, and git has them all anyway.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = ".gpu-hidden"
BIG = 64 * 1024
#: Read by training whatever the command: cnn3's default soft targets.
ALWAYS = ("emo/data/targets/",)
LIMIT = 64 * 2**20


def needed(root: Path, entries: list[dict], names: list[str]) -> set[str]:
    """Tracked paths (relative to ``root``) the named runs read: resume points and files their
    commands name."""
    by_name = {e["name"]: e for e in entries}
    missing = [n for n in names if n not in by_name]
    if missing:
        sys.exit(f"no run named {', '.join(missing)} in runs/queue.yaml")
    keep = set()
    for name in names:
        keep.add(f"runs/{name}/resume.ckpt")
        for token in shlex.split(by_name[name]["command"]):
            value = token.partition("=")[2]
            if value and (root / value).is_file():
                keep.add(Path(value).as_posix())
    return keep


def sent(root: Path) -> list[str]:
    """The files the device tool sends from the tree: tracked ones still here, and untracked ones
    git does not ignore (a resume point just back from a GPU call, say)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
        text=True,
    )
    return [p for p in dict.fromkeys(out.stdout.split("\0")) if p and (root / p).is_file()]


def travelling(root: Path, carried: list[str]) -> int:
    """Bytes a call would send: :func:`sent` and the carried paths."""
    files = [root / p for p in sent(root)]
    for c in carried:
        files += [f for f in (root / c).rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files)


def hide(root: Path, entries: list[dict], names: list[str]) -> list[str]:
    keep = needed(root, entries, names)
    moved = []
    for path in sent(root):
        if path in keep or path.startswith((HIDDEN, *ALWAYS)) or (root / path).stat().st_size <= BIG:
            continue
        dest = root / HIDDEN / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / path, dest)
        moved.append(path)
    return moved


def restore(root: Path) -> list[str]:
    hidden = root / HIDDEN
    back, clash = [], []
    for f in sorted(p for p in hidden.rglob("*") if p.is_file()) if hidden.is_dir() else []:
        path = f.relative_to(hidden).as_posix()
        if (root / path).exists():
            clash.append(path)
            continue
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, root / path)
        back.append(path)
    if clash:
        sys.exit(f"{len(clash)} hidden files exist again in the tree, left in {HIDDEN}/: {', '.join(clash)}")
    shutil.rmtree(hidden, ignore_errors=True)
    return back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["hide", "restore"])
    parser.add_argument("names", nargs="*", help="hide: the queue runs the GPU call trains (none: keep none)")
    parser.add_argument("--carry", nargs="*", default=[".gpu"], help="paths the call carries (default: .gpu)")
    args = parser.parse_args()
    if args.action == "hide":
        entries = yaml.safe_load((ROOT / "runs" / "queue.yaml").read_text())["runs"]
        moved = hide(ROOT, entries, args.names)
        size = travelling(ROOT, args.carry)
        print(f"moved {len(moved)} files into {HIDDEN}/; {size / 2**20:.1f} MiB will travel")
        if size > LIMIT:
            sys.exit(f"still over the device tool's {LIMIT / 2**20:.0f} MiB: carry less")
        print("after the call: python research/gpu_tree.py restore")
    else:
        back = restore(ROOT)
        print(f"{len(back)} files back in place")


if __name__ == "__main__":
    main()
