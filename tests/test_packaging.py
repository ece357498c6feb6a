"""The wheel's package list names every subpackage of emo."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def copy_tracked(dest: Path) -> None:
    """The files a commit would hold (tracked and new, not ignored), symlinks kept as symlinks."""
    import subprocess

    listed = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    for name in filter(
        None, subprocess.run(listed, cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    ):
        if (ROOT / name).is_symlink():  # emo/conf -> ../conf
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).symlink_to((ROOT / name).readlink())
        elif (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes((ROOT / name).read_bytes())


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "emo").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "emo.conf" in listed  # the Hydra configs travel with the wheel


@pytest.mark.slow
def test_the_wheel_builds_without_warnings_and_ships_the_runtime_not_the_checkpoints(tmp_path):
    """What `pip install .` gets: every Hydra config, every bundled ONNX model and its index, the
    detector, the page and the samples; no training checkpoint. Built from a copy of the tracked
    files, so the checkout gets no build/ folder."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    copy_tracked(src)
    vendor = ROOT / "emo" / "inference" / "web" / "vendor"  # git-ignored: `make web` puts it there
    if vendor.is_dir():
        shutil.copytree(vendor, src / "emo" / "inference" / "web" / "vendor")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "would be ignored" not in done.stdout + done.stderr  # setuptools' boxed warnings
    (wheel,) = tmp_path.glob("emo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"emo/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert configs <= names
    models = {f"emo/weights/{p.name}" for p in (ROOT / "emo" / "weights").glob("*.onnx")}
    assert len(models) >= 7 and models <= names and "emo/weights/index.json" in names
    assert {"emo/inference/static/index.html", "emo/samples/astronaut.png"} <= names
    web = {f"emo/inference/web/{p.name}" for p in (ROOT / "emo" / "inference" / "web").glob("*.*")}
    assert {"emo/inference/web/pipeline.js", "emo/inference/web/sw.js"} <= web <= names
    if vendor.is_dir():  # onnxruntime-web and its licence ship; make web's stamp does not
        shipped = {n for n in names if n.startswith("emo/inference/web/vendor/")}
        assert shipped == {
            f"emo/inference/web/vendor/{f}"
            for f in (
                "ort.wasm.min.mjs",
                "ort-wasm-simd-threaded.mjs",
                "ort-wasm-simd-threaded.wasm",
                "LICENSE",
            )
        }
    assert any(n.startswith("emo/weights/detectors/") and n.endswith(".onnx") for n in names)
    assert not [n for n in names if n.endswith(".ckpt")]  # the runtime never opens a checkpoint


@pytest.mark.slow
def test_an_editable_install_prints_no_warning(tmp_path):
    """`pip install -e .` (make install, make demo) on the flat layout: setuptools' editable wheel
    is a plain .pth file and says nothing (a package-dir mapping made it use an import finder,
    with a boxed warning). The backend runs on a copy, so nothing is installed or uninstalled."""
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    copy_tracked(src)
    build = f"from setuptools import build_meta as b; print(b.build_editable({str(tmp_path)!r}))"
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", build], cwd=src, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr and "!!" not in done.stderr, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("emo-*.whl")
    pth = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".pth")]
    assert len(pth) == 1 and zipfile.ZipFile(wheel).read(pth[0]).decode().strip() == str(src)
