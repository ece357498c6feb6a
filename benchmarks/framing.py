"""Where FER-2013's framing sits relative to a face detector's box (``emo.recognizer``'s
``HAAR_FRAMING``, ``YUNET_FRAMING``, ``YUNET_SHIFT``).

python benchmarks/framing.py [DATA_DIR] [--detector yunet] [--n 1200]   # default: $EMO_DATA_DIR or data/fer2013

Faces are upscaled 4x and border-padded, so the detector can find faces that fill the frame. On
Training faces it prints the ratio FER side / detector box side and the vertical offset of FER's
centre from the box's (in box sides); on PublicTest faces, the bundled model's accuracy when each
detected face is re-cropped at several ratios of the box (and shifts), as emo crops photos.
PrivateTest is never looked at: it is the reported test split.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from emo.data import load_fer2013
from emo.data.fer2013 import TRAIN, VAL
from emo.recognizer import EmotionRecognizer, crop_faces, make_detector, square_boxes

UP = 4  # 48 -> 192 px: Haar needs faces well above its 24 px window
SETTINGS = {"haar": {"max_side": None, "min_face": 60, "scale_factor": 1.05}, "yunet": {"max_side": None}}


def detect_one(detector, images: np.ndarray, idx: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(index, padded grey image, raw box) for each face the detector finds exactly once."""
    side, pad = 48 * UP, 48 * UP // 2
    found = []
    for i in idx:
        big = cv2.resize(images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        grey = np.pad(big, pad, mode="edge")
        boxes = detector.raw(grey)
        if len(boxes) == 1:
            found.append((int(i), grey, boxes[0]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    parser.add_argument("--detector", default="yunet", choices=list(SETTINGS))
    parser.add_argument("--n", type=int, default=1200, help="faces to sample from each split")
    args = parser.parse_args()
    data = load_fer2013(args.data_dir)
    split = np.asarray(data.split)
    rng = np.random.default_rng(0)
    detector = make_detector(args.detector, **SETTINGS[args.detector])
    side, pad = 48 * UP, 48 * UP // 2

    train = rng.choice(np.flatnonzero(split == TRAIN), args.n, replace=False)
    found = detect_one(detector, data.images, train)
    box_side = np.array([max(b[2], b[3]) for _, _, b in found])
    ratio = side / box_side
    shift = np.array([(pad + side / 2) - (b[1] + b[3] / 2) for _, _, b in found]) / box_side
    q = np.percentile(ratio, [25, 50, 75])
    s = np.percentile(shift, [25, 50, 75])
    print(f"Training: {len(found)} of {len(train)} faces found once by {args.detector}")
    print(f"  FER side / box side: median {q[1]:.2f} (IQR {q[0]:.2f}-{q[2]:.2f})")
    print(f"  FER centre below the box centre: median {s[1]:+.3f} box sides (IQR {s[0]:+.3f} to {s[2]:+.3f})")

    val = rng.choice(np.flatnonzero(split == VAL), args.n, replace=False)
    found = detect_one(detector, data.images, val)
    rec = EmotionRecognizer.from_pretrained()
    labels = np.array([int(data.labels[i]) for i, _, _ in found])
    full = rec.classify(data.images[[i for i, _, _ in found]])
    print(f"PublicTest: {len(found)} of {len(val)} faces found once; accuracy of {rec.source}")
    print("| crop side / box side | shift (box sides) | accuracy |\n|---|---|---|")
    print(f"| FER-2013's own crop | | {(full.argmax(1) == labels).mean():.3f} |")
    shifts = (0.0,) if args.detector == "haar" else (0.0, 0.05, 0.1)
    for framing in (0.9, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4):
        for dy in shifts:
            crops = []
            for _, g, b in found:
                b = b.copy()
                b[1] += dy * max(b[2], b[3])
                crops.append(crop_faces(g, square_boxes(b, framing))[0])
            acc = (rec.classify(crops).argmax(1) == labels).mean()
            print(f"| {framing:.2f} | {dy:+.2f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
