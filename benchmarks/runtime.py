"""The runtime install (``pip install .``: numpy, OpenCV, onnxruntime, rich; ONNX models) against the
previous design (torch and everything, ``.ckpt`` models run in PyTorch), measured in one run.

python benchmarks/runtime.py [--venv DIR] [--baseline-ref 9af93b2] [--repeat 5] [--json OUT]

Install: a fresh venv (``python -m venv``, in a temp dir, or ``--venv DIR``: created there and kept,
or reused if it exists) gets ``pip install <repo>`` with no extras (pip may use its cache; the
project is built from a snapshot of the working tree, tracked and untracked-not-ignored files, so
the build writes nothing into the checkout). Reported: the size of its site-packages (file sizes,
without pip, setuptools, wheel and _distutils_hack), its distributions (``pip list`` less pip,
setuptools and wheel), the install's wall time, and which of torch, lightning, hydra-core,
matplotlib and scipy it holds (none is the bar). The previous design is never installed (about 6
GB): the baseline column's size and count are those of ``--baseline-venv`` (default: the repo's
dev venv, ``.[dev]``, which has torch and the rest), a ceiling rather than the old ``pip install .``.

Timings, each the median of ``--repeat`` runs after one untimed warm-up (page cache and bytecode
warm), wall time of a whole process: ``from emo import EmotionRecognizer;
EmotionRecognizer.from_pretrained()`` (cold start), ``emo-predict`` on the bundled astronaut
sample, and ``import numpy, cv2, onnxruntime`` and ``python -c pass`` for scale. The runtime runs
the installed package from a temp cwd (the checkout is not on sys.path); the baseline is a ``git
worktree`` of ``--baseline-ref`` run by ``--baseline-python`` (default: the dev venv's, which has
torch) with ``PYTHONPATH`` and cwd the worktree (``python -m emo.inference.predict`` for
emo-predict). Ratios are runtime / baseline. The machine may be shared: the load average is printed
with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "emo" / "samples" / "astronaut.png"
#: Packaging tools: not counted in the size nor the distributions.
TOOLS = {"pip", "setuptools", "wheel"}
TOOL_ENTRIES = {"pip", "setuptools", "wheel", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}
#: The training stack, none of which the runtime may install.
HEAVY = ["torch", "lightning", "hydra-core", "matplotlib", "scipy"]
#: What is compared with the bars below.
BARS = {"size": 420.0, "count": 15, "cold": 1.0, "predict": 1.5}
COLD_START = "from emo import EmotionRecognizer; EmotionRecognizer.from_pretrained()"
IMPORTS = "import numpy, cv2, onnxruntime"


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if out.returncode:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-30:])
        raise SystemExit(f"failed ({out.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return out


def clean_env(pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def wall(cmd: list[str], cwd: Path, env: dict[str, str], repeat: int) -> dict:
    """Median wall time (s) of a whole process over ``repeat`` runs, after one untimed warm-up."""
    run(cmd, cwd=cwd, env=env)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = run(cmd, cwd=cwd, env=env)
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "runs": times, "stdout": out.stdout}


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(run([str(python), "-c", code], env=clean_env()).stdout.strip())


def is_tool(entry: str) -> bool:
    """pip, setuptools, wheel, _distutils_hack and their dist-info / egg-info."""
    base = entry.split("-")[0] if entry.endswith((".dist-info", ".egg-info")) else entry
    return base in TOOL_ENTRIES or entry in TOOL_ENTRIES


def size_mb(site: Path) -> float:
    total = 0
    for entry in site.iterdir():
        if is_tool(entry.name):
            continue
        if entry.is_symlink() or entry.is_file():
            total += entry.lstat().st_size
            continue
        for root, _dirs, files in os.walk(entry):
            total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total / 1e6


def distributions(python: Path) -> dict[str, str]:
    out = run([str(python), "-m", "pip", "list", "--format", "json"], env=clean_env())
    return {d["name"]: d["version"] for d in json.loads(out.stdout) if norm(d["name"]) not in TOOLS}


def describe_venv(python: Path) -> dict:
    site = site_packages(python)
    dists = distributions(python)
    names = {norm(n) for n in dists}
    return {
        "python": str(python),
        "site_packages": str(site),
        "size_mb": size_mb(site),
        "count": len(dists),
        "distributions": dists,
        "heavy": [h for h in HEAVY if h in names],
    }


def snapshot(dest: Path) -> Path:
    """The working tree's tracked and untracked-not-ignored files, copied to ``dest``."""
    out = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    for rel in filter(None, out.stdout.split("\0")):
        src = REPO / rel
        if src.is_file():  # deleted but not staged: gone from the tree
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def install(venv: Path, python: str, tmp: Path) -> dict:
    """Create (or reuse) ``venv`` and ``pip install`` the project into it, no extras."""
    reused = (venv / "bin" / "python").exists()
    t0 = time.perf_counter()
    if not reused:
        run([python, "-m", "venv", str(venv)], env=clean_env())
    t_venv = time.perf_counter() - t0
    src = snapshot(tmp / "src")
    vpy = venv / "bin" / "python"
    t0 = time.perf_counter()
    run([str(vpy), "-m", "pip", "install", "--disable-pip-version-check", str(src)], env=clean_env(), cwd=tmp)
    t_pip = time.perf_counter() - t0
    return {"venv": str(venv), "reused": reused, "venv_s": t_venv, "install_s": t_pip}


def emo_location(python: Path, cwd: Path, env: dict[str, str]) -> str:
    code = "import emo; print(emo.__file__)"
    return run([str(python), "-c", code], cwd=cwd, env=env).stdout.strip()


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def ratio(base: float | None, new: float | None) -> str:
    return "—" if not base or new is None else f"{new / base:.2f}x"


def check(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--venv", type=Path, help="the runtime venv: created there and kept (reused if it exists)"
    )
    parser.add_argument("--python", default=sys.executable, help="the Python that creates the venv")
    parser.add_argument("--baseline-ref", default="9af93b2", help="the previous design's commit")
    parser.add_argument(
        "--baseline-python", type=Path, default=REPO / ".venv" / "bin" / "python", help="a Python with torch"
    )
    parser.add_argument(
        "--baseline-venv",
        type=Path,
        help="a venv with the heavy install, for its size and count (default: the one of --baseline-python)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row, median kept (default: 5)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also save the results as JSON")
    args = parser.parse_args()
    baseline_venv = args.baseline_venv or args.baseline_python.parent.parent
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_start = os.getloadavg()
    ref = run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline_ref]).stdout.strip()
    res: dict = {
        "baseline_ref": ref,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "uptime_start": uptime_start,
    }
    tmp = Path(tempfile.mkdtemp(prefix="emo-runtime-bench-"))
    worktree = tmp / "baseline"
    try:
        # 1. Install.
        venv = args.venv.resolve() if args.venv else tmp / "venv"
        print(f"pip install {REPO} into {venv} ...", flush=True)
        res["install"] = install(venv, args.python, tmp)
        vpy = venv / "bin" / "python"
        res["runtime"] = describe_venv(vpy)
        res["baseline"] = describe_venv(baseline_venv / "bin" / "python") if baseline_venv.exists() else None

        # The previous design, checked out beside the repo.
        run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), ref])
        cwd = tmp / "cwd"
        cwd.mkdir()
        png = shutil.copy2(SAMPLE, cwd / SAMPLE.name)  # one input for both
        new_env, old_env = clean_env(), clean_env(worktree)
        bpy = args.baseline_python
        res["where"] = {
            "runtime": emo_location(vpy, cwd, new_env),
            "baseline": emo_location(bpy, worktree, old_env),
        }
        assert res["where"]["runtime"].startswith(res["runtime"]["site_packages"]), res["where"]
        assert res["where"]["baseline"].startswith(str(worktree)), res["where"]
        versions = "import importlib.metadata as m; print(m.version('{}'))"
        res["versions"] = {
            "onnxruntime (runtime)": run([str(vpy), "-c", versions.format("onnxruntime")]).stdout.strip(),
            "torch (baseline)": run([str(bpy), "-c", versions.format("torch")], env=old_env).stdout.strip(),
        }

        # 2-4. Timings.
        timings = {}
        jobs = {
            "cold": ([str(vpy), "-c", COLD_START], [str(bpy), "-c", COLD_START]),
            "predict": (
                [str(venv / "bin" / "emo-predict"), str(png)],
                [str(bpy), "-m", "emo.inference.predict", str(png)],
            ),
            "imports": ([str(vpy), "-c", IMPORTS], [str(bpy), "-c", IMPORTS]),
            "pass": ([str(vpy), "-c", "pass"], [str(bpy), "-c", "pass"]),
        }
        for key, (new_cmd, old_cmd) in jobs.items():
            print(f"timing {key} ...", flush=True)
            timings[key] = {
                "runtime": wall(new_cmd, cwd, new_env, args.repeat),
                "baseline": wall(old_cmd, worktree, old_env, args.repeat),
            }
        res["timings"] = timings
    finally:
        if worktree.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)])
        shutil.rmtree(tmp, ignore_errors=True)
    res["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_end = os.getloadavg()
    res["load"] = {"start": load_start, "end": load_end}

    new, old, inst = res["runtime"], res["baseline"] or {}, res["install"]
    med = {k: (v["baseline"]["median"], v["runtime"]["median"]) for k, v in timings.items()}
    n = args.repeat
    rows = [
        (
            "site-packages MB (baseline: dev venv .[dev])",
            fmt(old.get("size_mb"), ".0f"),
            f"{new['size_mb']:.0f}",
            ratio(old.get("size_mb"), new["size_mb"]),
            f"≤ {BARS['size']:.0f}: {check(new['size_mb'] <= BARS['size'])}",
        ),
        (
            "distributions (pip list less pip/setuptools/wheel)",
            str(old.get("count", "—")),
            str(new["count"]),
            ratio(old.get("count"), new["count"]),
            f"≤ {BARS['count']}: {check(new['count'] <= BARS['count'])}",
        ),
        (
            "torch/lightning/hydra-core/matplotlib/scipy",
            ", ".join(old.get("heavy", [])) or "—",
            ", ".join(new["heavy"]) or "none",
            "",
            f"none: {check(not new['heavy'])}",
        ),
        (
            "pip install s" + (" (reused venv)" if inst["reused"] else ""),
            "— (not installed)",
            f"{inst['install_s']:.1f}",
            "",
            "",
        ),
        (
            f"cold start s: from_pretrained() (median of {n})",
            f"{med['cold'][0]:.2f}",
            f"{med['cold'][1]:.2f}",
            ratio(*med["cold"]),
            f"≤ {BARS['cold']}: {check(med['cold'][1] <= BARS['cold'])}",
        ),
        (
            f"emo-predict astronaut.png s (median of {n})",
            f"{med['predict'][0]:.2f}",
            f"{med['predict'][1]:.2f}",
            ratio(*med["predict"]),
            f"≤ {BARS['predict']}: {check(med['predict'][1] <= BARS['predict'])}",
        ),
        (
            f"import numpy, cv2, onnxruntime s (median of {n})",
            f"{med['imports'][0]:.2f}",
            f"{med['imports'][1]:.2f}",
            ratio(*med["imports"]),
            "",
        ),
        (
            f"python -c pass s (median of {n})",
            f"{med['pass'][0]:.3f}",
            f"{med['pass'][1]:.3f}",
            ratio(*med["pass"]),
            "",
        ),
    ]
    print()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end"
    )
    print(f"uptime at the start: {uptime_start}")
    print(f"uptime at the end:   {res['uptime_end']}")
    print(
        f"runtime venv: {inst['venv']} (venv {inst['venv_s']:.1f} s, pip install {inst['install_s']:.1f} s); "
        + ", ".join(f"{k} {v}" for k, v in res["versions"].items())
    )
    same = timings["predict"]["runtime"]["stdout"] == timings["predict"]["baseline"]["stdout"]
    res["predict_output_identical"] = same
    print(f"emo-predict prints the same table in both: {'yes' if same else 'NO (see --json)'}")
    print(f"runtime distributions: {', '.join(f'{k} {v}' for k, v in sorted(new['distributions'].items()))}")
    print()
    print(f"| metric | baseline ({ref}, torch) | runtime (pip install .) | ratio | bar |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
