"""Where FER-2013's framing sits relative to the Haar detector's box (``emo.recognizer.FRAMING``).

python benchmarks/framing.py [DATA_DIR] [--n 1200]     # default: $EMO_DATA_DIR or data/fer2013

On PrivateTest faces (upscaled 4x and border-padded, so the detector can find faces that fill
the frame) it prints the ratio FER side / Haar box side, then the bundled model's accuracy when
each detected face is re-cropped at several ratios of the Haar box, as emo crops photos.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from emo.data import load_fer2013
from emo.data.fer2013 import TEST
from emo.recognizer import EmotionRecognizer, FaceDetector, crop_faces, square_boxes

UP = 4  # 48 -> 192 px: Haar needs faces well above its 24 px window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    parser.add_argument("--n", type=int, default=1200, help="PrivateTest faces to sample")
    args = parser.parse_args()
    data = load_fer2013(args.data_dir)
    test = np.flatnonzero(np.asarray(data.split) == TEST)  # PrivateTest
    idx = np.random.default_rng(0).choice(test, min(args.n, len(test)), replace=False)
    rec = EmotionRecognizer.from_pretrained()
    detector = FaceDetector(max_side=None, min_face=60, scale_factor=1.05)
    side, pad = 48 * UP, 48 * UP // 2
    found = []
    for i in idx:
        big = cv2.resize(data.images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        grey = np.pad(big, pad, mode="edge")
        boxes = detector.raw(grey)
        if len(boxes) == 1:
            found.append((i, grey, boxes[0]))
    ratio = np.array([side / b[2] for _, _, b in found])
    q25, q50, q75 = np.percentile(ratio, [25, 50, 75])
    print(
        f"{len(found)} of {len(idx)} faces found once; FER side / Haar box: median {q50:.2f} (IQR {q25:.2f}-{q75:.2f})"
    )
    labels = np.array([int(data.labels[i]) for i, _, _ in found])
    full = rec.classify(data.images[[i for i, _, _ in found]])
    print("| crop side / Haar box | accuracy |\n|---|---|")
    print(f"| FER-2013's own crop | {(full.argmax(1) == labels).mean():.3f} |")
    for framing in (0.9, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4):
        crops = [crop_faces(g, square_boxes(b, framing))[0] for _, g, b in found]
        acc = (rec.classify(crops).argmax(1) == labels).mean()
        print(f"| {framing:.2f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
