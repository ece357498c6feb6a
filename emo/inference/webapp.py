"""emo on the device: the live page that runs YuNet and an emo model in the browser.

    emo serve                        # http://127.0.0.1:8000/ is this page; /server the server-side one
    emo export-web site/             # the same page as a static folder: python -m http.server -d site/

The page (``emo/inference/web/``) captures the camera and runs both networks with onnxruntime-web
(WebAssembly); no frame, crop or result leaves the device. Its pipeline (``pipeline.js``) repeats
the Python runtime's steps in the same arithmetic, and every setting it uses comes from
``config.json``, which :func:`web_config` writes from the same constants and model metadata the
Python side reads, so the two cannot drift apart. A service worker caches the page, the runtime
and the models on the first visit, so it opens offline after that and installs as an app.

onnxruntime-web itself is not in git: ``make web`` runs ``npm ci`` in ``web/`` (the version is
pinned in ``web/package-lock.json``) and copies its WebAssembly build and licence into
``emo/inference/web/vendor/``, from where the wheel ships it; an installed emo needs no npm.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from emo import __version__, weights
from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import model_metadata
from emo.inference.detect import YUNET_ANYSIZE_PATH, YUNET_TOP_K, YuNetDetector
from emo.inference.images import os_reason, shown
from emo.inference.realtime import REALTIME_DETECTOR

WEB_DIR = Path(__file__).resolve().parent / "web"
VENDOR_DIR = WEB_DIR / "vendor"
#: onnxruntime-web's files the page loads (its WebAssembly build, SIMD, no WebGPU), and its licence.
VENDOR_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm", "LICENSE")
#: The page's own files.
APP_FILES = (
    "index.html",
    "app.js",
    "pipeline.js",
    "style.css",
    "manifest.webmanifest",
    "icon.svg",
    "icon-192.png",
    "icon-512.png",
)
#: The models the page offers, by purpose: the default, and the one with the fewest multiply-adds.
WEB_MODELS = ("default", "fast")
#: The live page's settings, as ``python -m emo.realtime`` has them.
DETECT_EVERY = 5
SMOOTH = 0.8
MIN_IOU = 0.3


def vendor_missing() -> list[str]:
    """onnxruntime-web's files absent from this install (``make web`` puts them there)."""
    return [name for name in VENDOR_FILES if not (VENDOR_DIR / name).is_file()]


def check_vendor() -> None:
    """Raise a one-line :class:`EmoError` if onnxruntime-web is missing from this install."""
    missing = vendor_missing()
    if missing:
        raise EmoError(
            f"the on-device page's runtime (onnxruntime-web: {', '.join(missing)}) is missing from "
            f"{shown(VENDOR_DIR)}: run `make web` in the emo checkout (needs npm), or install emo from a wheel"
        )


@functools.lru_cache(maxsize=16)
def _model_entry(purpose: str) -> str:
    return json.dumps(model_entry(purpose))


def model_entry(purpose: str) -> dict[str, Any]:
    """config.json's entry for the bundled model a purpose (or name) picks: its file (the backend
    the index records: int8 where that keeps the fp32 file's accuracy) and what the file itself
    says of its classes, preprocessing and TTA."""
    name = weights.resolve_name(purpose)
    path = weights.model_path(name, weights.recorded_backend(name))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = model_metadata(session, path)
    info = weights.info(name)
    return {
        "name": name,
        "purpose": purpose if purpose in weights.ALIASES else name,
        "file": f"models/{path.name}",
        "class_names": meta["class_names"],
        "preprocess": meta["preprocess"].as_dict(),
        "tta": meta.get("tta", "none"),
        "bytes": path.stat().st_size,
        "macs": info.get("macs"),
        "accuracy": info.get("privatetest", {}).get("accuracy"),
        "agreement": info.get("privatetest", {}).get("agreement"),
        "summary": info.get("summary", ""),
        "_path": str(path),
    }


def web_config(models: Sequence[str] = WEB_MODELS) -> dict[str, Any]:
    """config.json: the detector's and the live loop's settings, and one entry per model; the
    photo settings are YuNetDetector's defaults, the live ones ``emo.realtime``'s."""
    photo = {k: v.default for k, v in inspect.signature(YuNetDetector).parameters.items()}
    entries, seen = [], set()
    for purpose in models:
        entry = json.loads(_model_entry(purpose))  # each file's metadata read once per process
        if entry["name"] in seen:  # two purposes that pick one model: offered once
            continue
        seen.add(entry["name"])
        entries.append(entry)
    return {
        "version": __version__,
        "detector": {
            "file": "models/yunet.onnx",
            "max_side": photo["max_side"],
            "min_face": photo["min_face"],
            "score_threshold": photo["score_threshold"],
            "nms_threshold": photo["nms_threshold"],
            "top_k": YUNET_TOP_K,
            "framing": photo["framing"],
            "centre": list(photo["centre"]),
            "track_face": YuNetDetector.track_face,
            "raw_per_crop": YuNetDetector.raw_per_crop,
        },
        "live": {
            "detector": dict(REALTIME_DETECTOR["yunet"]),
            "detect_every": DETECT_EVERY,
            "smooth": SMOOTH,
            "min_iou": MIN_IOU,
        },
        "models": entries,
    }


def site(models: Sequence[str] = WEB_MODELS, server: bool = False) -> dict[str, Path | bytes]:
    """Every file of the page, by its path in the site: the app, onnxruntime-web, the models,
    config.json and the service worker (``sw.js``, which lists them all and is named after their
    content, so a browser updates its cache exactly when a file changed). ``server``: served by
    ``emo serve``, whose server-side page (``/server``) the page then links to.

    Raises:
        EmoError: onnxruntime-web is missing from this install (``make web``), or a model name is
            not bundled.
    """
    check_vendor()
    config = {**web_config(models), "server": server}
    files: dict[str, Path | bytes] = {name: WEB_DIR / name for name in APP_FILES}
    files.update({f"vendor/{name}": VENDOR_DIR / name for name in VENDOR_FILES})
    files[config["detector"]["file"]] = YUNET_ANYSIZE_PATH
    for entry in config["models"]:
        files[entry["file"]] = Path(entry.pop("_path"))  # where the file is: not for the page
    files["config.json"] = json.dumps(config, indent=1).encode()
    digest = hashlib.sha256()
    for key in sorted(files):
        value = files[key]
        digest.update(key.encode())
        digest.update(value if isinstance(value, bytes) else _file_digest(value))
    cached = ["./", *sorted(k for k in files if k != "vendor/LICENSE")]
    worker = (WEB_DIR / "sw.js").read_text(encoding="utf-8")
    worker = worker.replace("__EMO_CACHE__", f"emo-{__version__}-{digest.hexdigest()[:12]}")
    files["sw.js"] = worker.replace("__EMO_FILES__", json.dumps(cached)).encode()
    return files


def _file_digest(path: Path) -> bytes:
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> bytes:
    """A file's sha256, read once per process while its size and time stay the same (every
    ``emo serve`` app, every test's, names its cache after the page's 17 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def export_web(out: str | Path, models: Sequence[str] = WEB_MODELS, overwrite: bool = False) -> Path:
    """Write the page as a self-contained static folder ``out`` (any static host serves it;
    ``python -m http.server -d out``). It is written beside ``out`` first and moved into place,
    so an interrupted export leaves no half folder.

    Raises:
        EmoError: ``out`` is a file, or a folder that is not empty (unless ``overwrite``), or
            cannot be written; onnxruntime-web is missing (``make web``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmoError(f"export-web: {shown(out)} is a file: give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EmoError(
            f"export-web: {shown(out)} is not empty: give a new folder, or --overwrite to replace it"
        )
    files = site(models)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        for key, value in files.items():
            dest = tmp / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, bytes):
                dest.write_bytes(value)
            else:
                shutil.copyfile(value, dest)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EmoError(
            f"export-web: cannot write {shown(out)} ({os_reason(err)}): give a folder you can write"
        ) from None
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog("emo export-web"),
        description="Write emo's on-device page (the models run in the browser) as a static folder.",
        epilog="Serve it with any static host, e.g. python -m http.server 8000 -d DIR, and open "
        "http://localhost:8000/ (a phone needs https: see the docs' Web app page).",
    )
    p.add_argument("out", metavar="DIR", help="the folder to write (new or empty; --overwrite replaces it)")
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="a bundled model or purpose the page offers; repeat for several (default: default and fast)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it holds files")
    return p.parse_args(argv)


@exit_on_emo_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = args.models or list(WEB_MODELS)
    for name in models:
        weights.resolve_name(name)  # an unknown name fails in one line before anything is written
    out = export_web(args.out, models, args.overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {out}/ ({size / 1e6:.1f} MB): serve it with python -m http.server 8000 -d {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    main()
