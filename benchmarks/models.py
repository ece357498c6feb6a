"""Per-face latency of every bundled seven-class model (and the ensemble) with its recorded TTA.

python benchmarks/models.py [--repeat 200] [--threads 1]

One 48x48 grey crop at a time through ``EmotionRecognizer.probs`` (preprocessing, the network(s)
with the model's TTA, softmax) on the backend ``from_pretrained`` runs (the recorded one: int8 for
the real-time models, fp32 ONNX for the others), in onnxruntime, the median of ``--repeat`` calls after 30 warm-up calls,
and the same with TTA ``none``. Ratios are against the default model in the same run (the
machine is noisy; compare ratios, not milliseconds, across runs).
"""

from __future__ import annotations

import argparse

import numpy as np
from realtime import median_ms  # benchmarks/realtime.py: the same timer as the real-time table

from emo import EmotionRecognizer
from emo.weights import default_name
from emo.weights import index as load_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads (the real-time path uses 1)"
    )
    args = parser.parse_args()
    crop = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    index = load_index()
    names = [n for n, r in index.items() if r.get("classes") == 7]
    base = default_name()
    rows = {}
    for name in names:
        rec = EmotionRecognizer.from_pretrained(name, threads=args.threads)
        tta = index[name].get("tta", "none")
        rows[name] = (
            f"{rec.backend.name} {tta}",
            median_ms(lambda r=rec, t=tta: r.probs([crop], tta=t), args.repeat),
            median_ms(lambda r=rec: r.probs([crop], tta="none"), args.repeat),
        )
    ref = rows[base][1]
    print(f"onnxruntime, {args.threads} thread(s), one 48x48 face per call, median of {args.repeat}\n")
    print("| model | params | backend | TTA | per-face ms (its TTA) | x default | per-face ms (none) |")
    print("|---|---|---|---|---|---|---|")
    for name, (how, ms, ms_none) in rows.items():
        label = f"{name} (default)" if name == base else name
        params = index[name].get("params", 0) / 1e6
        backend, tta = how.split()
        print(
            f"| {label} | {params:.2f} M | {backend} | {tta} | {ms:.2f} | {ms / ref:.2f}x | {ms_none:.2f} |"
        )


if __name__ == "__main__":
    main()
