"""int8 static quantisation of the default real-time model: PublicTest accuracy and per-face latency
against fp32, measured in one run.

python benchmarks/quantize.py [DATA_DIR] [--ckpt vgg_s] [--calibration 512]

The int8 model is calibrated on Training faces (``emo.inference.export.calibration_faces``) exactly as
``emo-export --int8`` does; accuracy is measured on all of PublicTest (the validation split, where
the acceptance rule lives: at most 0.3 points below fp32), latency as the median of 300
single-face calls (preprocessing, network, softmax) on one thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emo import EmotionRecognizer, weights
from emo.data import load_fer2013
from emo.data.fer2013 import VAL
from emo.inference.backends import resolve_checkpoint
from emo.models.module import load_checkpoint
from emo.models.onnx import calibration_faces, export_onnx, quantize_int8


def per_face_ms(rec: EmotionRecognizer, crop: np.ndarray, n: int = 300) -> float:
    for _ in range(30):
        rec.probs([crop])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        rec.probs([crop])
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    parser.add_argument("--ckpt", default="vgg_s")
    parser.add_argument("--calibration", type=int, default=512, help="Training faces to calibrate on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # A bundled name means its packed checkpoint (the source checkout's emo/weights/NAME.ckpt).
    ckpt = (
        weights.checkpoint_path(args.ckpt)
        if args.ckpt in weights.available()
        else resolve_checkpoint(args.ckpt)
    )
    module = load_checkpoint(ckpt)
    data = load_fer2013(args.data_dir)
    val = np.flatnonzero(np.asarray(data.split) == VAL)
    faces, labels = data.images[val], np.asarray(data.labels)[val]
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(module, Path(tmp) / "fp32.onnx")
        int8 = Path(tmp) / "int8.onnx"
        int8.write_bytes(quantize_int8(module, calibration_faces(module, args.data_dir, args.calibration)))
        recs = {  # all without TTA: runtimes compared on the same work (a bundled ckpt records flip)
            "torch fp32": EmotionRecognizer.from_checkpoint(ckpt, backend="torch", tta="none"),
            "onnxruntime fp32": EmotionRecognizer.from_checkpoint(
                Path(tmp) / "fp32.onnx", threads=1, tta="none"
            ),
            "onnxruntime int8": EmotionRecognizer.from_checkpoint(int8, threads=1, tta="none"),
        }
        rows = []
        for name, rec in recs.items():
            acc = float((rec.classify(faces).argmax(1) == labels).mean())
            rows.append((name, acc, per_face_ms(rec, faces[0])))
        size = int8.stat().st_size
    load = os.getloadavg()[0]
    print(
        f"{module.hparams.arch} ({ckpt.name}); PublicTest {len(val)} faces; one thread; load average {load:.1f}"
    )
    print(f"int8 model: {size / 1e6:.2f} MB, calibrated on {args.calibration} Training faces")
    print("| runtime | PublicTest acc | per-face ms |\n|---|---|---|")
    for name, acc, ms in rows:
        print(f"| {name} | {100 * acc:.2f}% | {ms:.2f} |")
    drop = 100 * (rows[1][1] - rows[2][1])
    print(f"int8 vs fp32 (onnxruntime): {drop:+.2f} points lower; accepted: {drop <= 0.3}")


if __name__ == "__main__":
    main()
