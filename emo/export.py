"""Export checkpoints to ONNX, the runtime's format (``pip install 'emo[train]'`` to run this).

    emo-export --ckpt outputs/train/runs/<date> --out model.onnx   # a run's best checkpoint
    emo-export --ckpt a.ckpt b.ckpt c.ckpt --out ens.onnx          # an ensemble: one graph
    emo-export --ckpt run.ckpt --int8 --out model-int8.onnx        # static int8 (calibrated)
    emo-export --ckpt emo/weights/vgg_s.ckpt --bundle vgg_s        # a bundled model's ONNX file

The model maps normalised faces (N, 1, S, S) to probabilities (N, C) and carries the class names,
preprocessing and labels as metadata, so ``EmotionRecognizer.from_checkpoint("model.onnx")``,
``emo-predict --ckpt model.onnx`` and ``python -m emo.realtime --ckpt model.onnx`` need nothing
else (and no torch). ``--backend onnx`` with a ``.ckpt`` exports it once into the cache
(``$EMO_CACHE_DIR``).

``--out`` is checked before anything is loaded (not a folder, not an input checkpoint, in a folder
that exists or can be made and written); the model is written to a temporary file beside it,
checked (its size, and that onnxruntime opens it) and moved into place in one step.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emo import weights
from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import resolve_checkpoint
from emo.inference.images import atomic_path, check_output, is_dir, os_reason, shown
from emo.inference.preprocess import TTA_MODES
from emo.models.module import load_checkpoint, load_ensemble
from emo.models.onnx import calibration_faces, export_onnx, int8_weights_of, parity, quantize_int8

FORMATS = ("onnx",)


@exit_on_emo_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog("emo-export"), description="Export emo checkpoints to ONNX.")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="output format (default: onnx)")
    parser.add_argument(
        "--ckpt",
        nargs="+",
        required=True,
        help=".ckpt files or training run directories; several make one ensemble graph",
    )
    parser.add_argument("--out", help="output file (default: emo-<checkpoint name>[-int8].onnx here)")
    parser.add_argument(
        "--bundle",
        metavar="NAME",
        help="write the bundled model NAME: emo/weights/NAME.onnx (NAME-int8.onnx with --int8), "
        "recording the TTA emo/weights/index.json gives it",
    )
    parser.add_argument(
        "--tta", choices=TTA_MODES, help="the test-time augmentation the model records (default: none)"
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="static int8 quantisation, calibrated on FER-2013 Training faces (--data-dir)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("EMO_DATA_DIR", "data/fer2013"),
        help="FER-2013 for --int8's calibration (default: $EMO_DATA_DIR or data/fer2013)",
    )
    args = parser.parse_args(argv)
    try:
        ckpts = [resolve_checkpoint(c) for c in args.ckpt]
    except OSError as err:  # a name the system refuses (too long)
        raise EmoError(f"--ckpt: {os_reason(err)}: give a shorter path") from None
    for c in ckpts:
        if c.suffix == ".onnx":
            raise EmoError(f"{shown(c)} is an ONNX model already: give the .ckpt it was exported from")
    suffix = weights.INT8_SUFFIX if args.int8 else ""
    if args.bundle:
        out = weights.WEIGHTS_DIR / f"{args.bundle}{suffix}.onnx"
    else:
        out = Path(args.out or f"emo-{ckpts[0].stem}{suffix}.onnx")
    # Before the checkpoint is loaded or anything exported: a bad --out costs a second, not the export.
    if is_dir(out):
        raise EmoError(f"--out {shown(out)} is a folder: give a file name, e.g. {shown(out / 'model.onnx')}")
    check_output(out, "--out", inputs=ckpts)
    module = load_checkpoint(ckpts[0]) if len(ckpts) == 1 else load_ensemble(ckpts)
    if args.bundle:
        tta = args.tta or weights.recorded().get(args.bundle, {}).get("tta") or "none"
    else:
        tta = args.tta or "none"
    if args.int8:
        model = quantize_int8(module, calibration_faces(module, args.data_dir), metadata={"emo_tta": tta})
    else:
        int8_weights = [w for c in ckpts for w in int8_weights_of(c)]
        model = export_onnx(module, metadata={"emo_tta": tta}, int8_weights=int8_weights)
    # Written beside --out, checked (every byte there, and onnxruntime agrees with torch on it),
    # then moved into place: --out is never left half-written, nor replaced by a bad file.
    with atomic_path(out, "--out") as tmp:
        with open(tmp, "wb") as f:
            f.write(model)
        if tmp.stat().st_size != len(model):
            raise EmoError(
                f"--out {shown(out)}: {tmp.stat().st_size} of {len(model)} bytes written (a full disk?)"
            )
        diff = parity(module, tmp)
    what = f"{module.hparams.arch}, {len(module.class_names)} classes, tta {tta}"
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {what})")
    print(f"onnxruntime vs torch: max abs probability difference {diff:.2e}", file=sys.stderr)


def cli() -> None:
    """Console entry point (``emo-export``, ``python -m emo.export``)."""
    main()


if __name__ == "__main__":
    cli()
