"""Bundled weights: slim emo checkpoints that ship inside the package.

    python -m emo.weights outputs/.../checkpoints/best-....ckpt cnn3   # pack a run's checkpoint
    python -m emo.weights ... vgg_fer --fp16                          # half the size

A packed file keeps only what inference needs (weights, architecture, class names,
preprocessing) plus where it came from (the training command's metrics), so it is small and
``emo.models.module.load_checkpoint`` reads it like any training checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from emo.errors import EmoError, exit_on_emo_error
from emo.paths import WEIGHTS_DIR


def available() -> list[str]:
    """Names of the bundled weights."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.ckpt"))


def metrics(name: str) -> dict:
    """The metrics recorded when ``name`` was packed (PrivateTest ``accuracy``, ``tta``, ...)."""
    ckpt = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    return dict(ckpt.get("emo_metrics") or {})


INDEX_NAME = "index.json"
#: The default model keeps at least this FER-2013 PublicTest accuracy.
DEFAULT_MIN_ACCURACY = 0.70
#: Names that stand for a bundled model chosen by its recorded metrics.
ALIASES = ("default", "leaderboard")


def index() -> dict[str, dict]:
    """Each bundled model's recorded yardsticks (``scripts/index_weights.py``): PublicTest and
    PrivateTest accuracy and agreement with people, TTA, size, whether it runs in real time."""
    path = WEIGHTS_DIR / INDEX_NAME
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    return {n: r for n, r in recorded.items() if (WEIGHTS_DIR / f"{n}.ckpt").is_file()}


def info(name: str) -> dict:
    """The index record of bundled model ``name`` (or an alias); ``{}`` for one the index lacks."""
    return dict(index().get(resolve_name(name), {}))


def recorded_tta(name: str) -> str:
    """The test-time augmentation recorded for bundled model ``name`` (chosen on PublicTest):
    what ``EmotionRecognizer`` uses unless told otherwise; ``none`` where the index records none."""
    return info(name).get("tta") or "none"


def _seven_class(records: dict[str, dict]) -> dict[str, dict]:
    return {
        n: r for n, r in records.items() if r.get("classes") == 7 and r.get("labels", "fer2013") == "fer2013"
    }


def default_name() -> str:
    """The model people get: among the seven-class models that run in real time and keep
    ``DEFAULT_MIN_ACCURACY`` on FER-2013 PublicTest, the one that agrees with people best on
    PublicTest (FER+ majority). Chosen from the index, so it follows newly bundled weights."""
    names = available()
    if not names:
        raise EmoError("no bundled weights in this installation: reinstall emo or train with emo.train")
    candidates = {
        n: r
        for n, r in _seven_class(index()).items()
        if r.get("realtime") and r["publictest"]["accuracy"] >= DEFAULT_MIN_ACCURACY
    }
    if candidates:
        return max(candidates, key=lambda n: candidates[n]["publictest"].get("agreement", 0.0))
    return leaderboard_name()


def leaderboard_name() -> str:
    """The seven-class model with the best FER-2013 PublicTest accuracy (the field's leaderboard
    yardstick; PrivateTest is only reported). Without an index: the best recorded accuracy."""
    names = available()
    if not names:
        raise EmoError("no bundled weights in this installation: reinstall emo or train with emo.train")
    records = _seven_class(index())
    if records:
        return max(records, key=lambda n: records[n]["publictest"]["accuracy"])
    return max(names, key=lambda n: metrics(n).get("accuracy", 0.0))


def resolve_name(name: str) -> str:
    """A bundled name, with ``default`` and ``leaderboard`` resolved."""
    return {"default": default_name, "leaderboard": leaderboard_name}.get(name, lambda: name)()


def weights_path(name: str) -> Path:
    """The file of bundled weights ``name`` (or an alias: ``default``, ``leaderboard``)."""
    name = resolve_name(name)
    path = WEIGHTS_DIR / f"{name}.ckpt"
    if not path.is_file():
        raise EmoError(
            f"no bundled weights named {name!r}: choose one of {', '.join([*available(), *ALIASES])}"
        )
    return path


def pack(src: str | Path, dst: str | Path, metrics: dict | None = None, fp16: bool = False) -> Path:
    """Write the inference part of checkpoint ``src`` to ``dst`` (optimizer state dropped).

    Args:
        fp16: store floating-point weights in half precision (half the size; loading casts them
            back to float32, and predictions move by ~1e-3 in probability at most).
    """
    # Here, not at the top: naming and finding weights (every inference start-up) needs no Lightning.
    from emo.models.module import load_checkpoint, read_checkpoint

    load_checkpoint(src)  # the weights must fit the architecture they claim
    ckpt = read_checkpoint(src)
    state = ckpt["state_dict"]
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    slim = {
        "state_dict": state,
        "hyper_parameters": ckpt["hyper_parameters"],
        "pytorch-lightning_version": ckpt.get("pytorch-lightning_version"),
        "emo_version": ckpt.get("emo_version"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "emo_metrics": metrics or {},
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, dst)
    return dst


@exit_on_emo_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pack a training checkpoint as bundled weights.")
    parser.add_argument("ckpt", help="a run's checkpoints/best-*.ckpt")
    parser.add_argument("name", help="bundled name, e.g. cnn3")
    parser.add_argument(
        "--metrics", help="the run's metrics.json, stored alongside (default: next to the run)"
    )
    parser.add_argument("--fp16", action="store_true", help="store the weights in half precision")
    parser.add_argument("--out", help="write here instead of emo/weights/NAME.ckpt")
    args = parser.parse_args(argv)
    metrics_file = (
        Path(args.metrics) if args.metrics else Path(args.ckpt).resolve().parent.parent / "metrics.json"
    )
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metrics.pop("checkpoint", None)  # a path on the training machine means nothing elsewhere
    dst = pack(args.ckpt, args.out or WEIGHTS_DIR / f"{args.name}.ckpt", metrics, fp16=args.fp16)
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
