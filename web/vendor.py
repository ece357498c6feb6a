"""Put onnxruntime-web into the package: ``npm ci`` in web/ (the version package-lock.json pins),
then its WebAssembly build and licence copied into emo/inference/web/vendor/, where the wheel
ships them from (an installed emo needs no npm).

    python3 web/vendor.py            # make web runs this; pip install . runs it where files are missing

Standard library only: it runs from the Makefile with any Python 3, and from the build backend
(web/build_backend.py) inside pip's isolated build environment.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
ROOT = WEB.parent
VENDOR = ROOT / "emo" / "inference" / "web" / "vendor"
DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
#: What the page loads (emo.inference.webapp.VENDOR_FILES), from the npm package's dist/.
FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
LICENCE = WEB / "LICENSE-onnxruntime-web.txt"
LOCK = WEB / "package-lock.json"


def present() -> bool:
    return all((VENDOR / name).is_file() for name in (*FILES, "LICENSE"))


def stamp() -> Path:
    return VENDOR / f".installed-{hashlib.sha1(LOCK.read_bytes()).hexdigest()[:12]}"


def vendor(force: bool = False) -> str | None:
    """Install the files unless they are there (and, with ``force``, from this lock file).

    Returns ``None`` when the files are in place, else one line saying why not (no npm, npm
    failed), for the caller to report.
    """
    if present() and not force:
        return None
    if present() and stamp().is_file():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed: install Node.js and npm, then run make web"
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=WEB,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"npm ci in web/ failed ({why}): run make web once the npm registry answers"
    shutil.rmtree(VENDOR, ignore_errors=True)
    VENDOR.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(DIST / name, VENDOR / name)
    shutil.copyfile(LICENCE, VENDOR / "LICENSE")
    stamp().touch()
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--if-missing", action="store_true", help="do nothing where the files are there")
    args = p.parse_args()
    why = vendor(force=not args.if_missing)
    if why:
        print(f"error: onnxruntime-web for the on-device page: {why}", file=sys.stderr)
        return 1
    print(f"onnxruntime-web in {VENDOR.relative_to(ROOT)}: {', '.join(FILES)}, LICENSE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
