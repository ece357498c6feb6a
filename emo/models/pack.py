"""Slim checkpoints: the inference part of a training checkpoint, for fine-tuning, distillation
and export (the package itself ships ONNX files: ``emo-export --bundle``).

    python -m emo.models.pack outputs/.../checkpoints/best-....ckpt cnn3   # pack a run's checkpoint
    python -m emo.models.pack ... vgg_fer --fp16                          # half the size
    python -m emo.models.pack A.ckpt B.ckpt C.ckpt ensemble --fp16 --metrics M.json   # an ensemble
    python -m emo.models.pack A.ckpt B.ckpt ensemble --int8     # weights as int8: a quarter of fp32

A packed file keeps only what inference needs (weights, architecture, class names,
preprocessing) plus where it came from (the training command's metrics), so it is small and
``emo.models.module.load_checkpoint`` reads it like any training checkpoint. Several checkpoints
before the name make one ensemble file (``pack_ensemble``: each member packed as above, at most
``MAX_ENSEMBLE_MB``), which ``load_checkpoint`` returns as an ``Ensemble`` (mean probabilities);
its metrics are the ``--metrics`` file given (e.g. ``python -m emo.evaluate 'ckpt_path=[A,B,C]'``'s).
The source checkout keeps the bundled models' packed checkpoints beside their ONNX files
(``emo/weights/NAME.ckpt``, ``emo.weights.checkpoint_path``); the wheel does not carry them.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import torch

import emo
from emo.errors import EmoError, exit_on_emo_error
from emo.models.checkpoint import ENSEMBLE_FORMAT, FORMAT_KEY, read_checkpoint
from emo.models.ensemble import Ensemble, check_ensemble_members
from emo.models.int8 import SCALES_KEY, quantize_state
from emo.models.module import load_checkpoint
from emo.paths import WEIGHTS_DIR

#: An ensemble file may not be larger than this (megabytes, 1e6 bytes).
MAX_ENSEMBLE_MB = 25.0


def _slim(ckpt: dict, fp16: bool, int8: bool = False) -> dict:
    """What inference needs of a checkpoint's contents (optimizer state dropped); ``int8``: the
    convolution and linear weights as int8 with per-channel scales (``emo.models.int8``), the
    rest in fp16."""
    state, extra = ckpt["state_dict"], {}
    if int8:
        state, scales = quantize_state(state)
        extra = {SCALES_KEY: scales}
    if fp16 or int8:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return {
        **extra,
        "state_dict": state,
        "hyper_parameters": ckpt["hyper_parameters"],
        "pytorch-lightning_version": ckpt.get("pytorch-lightning_version"),
        "emo_version": ckpt.get("emo_version"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        # a class-prior shift baked into the classifier's bias (research/prior_shift.py): provenance
        **({"emo_prior_shift": ckpt["emo_prior_shift"]} if "emo_prior_shift" in ckpt else {}),
    }


def pack(
    src: str | Path, dst: str | Path, metrics: dict | None = None, fp16: bool = False, int8: bool = False
) -> Path:
    """Write the inference part of checkpoint ``src`` to ``dst`` (optimizer state dropped).

    Args:
        fp16: store floating-point weights in half precision (half the size; loading casts them
            back to float32, and predictions move by ~1e-3 in probability at most).
        int8: store convolution and linear weights as int8 with a scale per output channel and
            the rest in fp16 (a quarter of fp32; loading dequantizes them to float32).
    """
    if isinstance(load_checkpoint(src), Ensemble):  # the weights must fit the architecture they claim
        raise EmoError(f"{src} is an ensemble file already: pack its members' checkpoints together instead")
    slim = {**_slim(read_checkpoint(src), fp16, int8), "emo_metrics": metrics or {}}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, dst)
    return dst


def pack_ensemble(
    srcs: list[str | Path],
    dst: str | Path,
    metrics: dict | None = None,
    fp16: bool = False,
    int8: bool = False,
) -> Path:
    """Write checkpoints ``srcs`` as one ensemble file ``dst``, which ``load_checkpoint`` returns as
    an ``Ensemble`` (their mean probabilities).

    Each member is packed as :func:`pack` would (fp16 or int8 when asked); the file's top level holds the
    shared class names, preprocessing and labels, the ensemble marker and ``metrics`` (the
    ensemble's own, e.g. from ``python -m emo.evaluate 'ckpt_path=[A,B]'``).

    Raises:
        EmoError: fewer than two checkpoints, one unusable or itself an ensemble, members that
            disagree on classes or preprocessing, or a file over ``MAX_ENSEMBLE_MB``; nothing is
            written then.
    """
    if len(srcs) < 2:
        raise EmoError(f"an ensemble needs two checkpoints or more, not {len(srcs)}: pack one with pack()")
    members = [load_checkpoint(p) for p in srcs]  # the weights must fit the architecture they claim
    for path, m in zip(srcs, members):
        if isinstance(m, Ensemble):
            raise EmoError(
                f"{path} is an ensemble file already: pack its members' checkpoints together instead"
            )
    check_ensemble_members(members, [str(p) for p in srcs])
    raw = [read_checkpoint(p) for p in srcs]
    contents = {
        FORMAT_KEY: ENSEMBLE_FORMAT,
        "members": [_slim(r, fp16, int8) for r in raw],
        "hyper_parameters": dict(Ensemble(members).hparams),  # arch, members, classes, preprocess, labels
        "pytorch-lightning_version": raw[0].get("pytorch-lightning_version"),
        "emo_version": emo.__version__,
        "emo_metrics": metrics or {},
    }
    buf = io.BytesIO()
    torch.save(contents, buf)
    size = buf.getbuffer().nbytes / 1e6
    if size > MAX_ENSEMBLE_MB:
        raise EmoError(
            f"the ensemble of {len(srcs)} would take {size:.1f} MB, over the {MAX_ENSEMBLE_MB:g} MB a bundled file "
            "may take: drop a member"
            + (
                ""
                if int8
                else " or pack in int8 (--int8)"
                if fp16
                else " or pack in fp16 (--fp16) or int8 (--int8)"
            )
        )
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(buf.getvalue())
    return dst


@exit_on_emo_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Pack a training checkpoint as bundled weights; several checkpoints: one ensemble file."
    )
    parser.add_argument(
        "ckpt", nargs="+", help="a run's checkpoints/best-*.ckpt; two or more make an ensemble"
    )
    parser.add_argument("name", help="bundled name, e.g. cnn3 (or ensemble)")
    parser.add_argument(
        "--metrics",
        help="the run's metrics.json, stored alongside (default: next to the run; "
        "an ensemble's own only when given, e.g. from python -m emo.evaluate 'ckpt_path=[A,B]')",
    )
    parser.add_argument("--fp16", action="store_true", help="store the weights in half precision")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="store convolution and linear weights as int8 (per-channel scales), the rest in fp16",
    )
    parser.add_argument("--out", help="write here instead of emo/weights/NAME.ckpt")
    args = parser.parse_args(argv)
    single = len(args.ckpt) == 1
    if args.metrics:
        metrics_file: Path | None = Path(args.metrics)
    elif single:
        metrics_file = Path(args.ckpt[0]).resolve().parent.parent / "metrics.json"
    else:
        metrics_file = None  # a member's metrics are not the ensemble's
    metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.is_file() else {}
    metrics.pop("checkpoint", None)  # a path on the training machine means nothing elsewhere
    dst = args.out or WEIGHTS_DIR / f"{args.name}.ckpt"
    if single:
        dst = pack(args.ckpt[0], dst, metrics, fp16=args.fp16, int8=args.int8)
    else:
        dst = pack_ensemble(args.ckpt, dst, metrics, fp16=args.fp16, int8=args.int8)
    what = "" if single else f", an ensemble of {len(args.ckpt)}"
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB{what})", file=sys.stderr)


if __name__ == "__main__":
    main()
