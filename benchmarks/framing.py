"""Where FER-2013's framing sits relative to a face detector's output (``emo.inference.detect``'s
``HAAR_FRAMING``; ``YUNET_FRAMING`` and ``YUNET_CENTRE``).

python benchmarks/framing.py [DATA_DIR] [--detector yunet|haar] [--n 1200]   # $EMO_DATA_DIR or data/fer2013

Faces are upscaled 4x and border-padded, so the detector can find faces that fill the frame.
On Training faces it measures FER's crop against the detector: Haar, the ratio FER side / box
side; YuNet, the ratio FER side / (eye distance + eyes-to-mouth distance) from its landmarks and
FER's centre relative to the eyes-mouth midpoint (and, for comparison, the ratio to its box). On
PublicTest faces it prints the bundled model's accuracy on faces re-cropped as emo crops photos,
at several scales of the measured framing (YuNet: also squares of its box, and crops rotated so
the eyes are level). PrivateTest is never looked at: it is the reported test split.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from emo import EmotionRecognizer
from emo.data import load_fer2013
from emo.data.fer2013 import TRAIN, VAL
from emo.inference.detect import crop_faces, make_detector, square_boxes

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


def yunet_geometry(row: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(eye distance + eyes-to-mouth distance, eyes-mouth midpoint, eye-line angle in degrees)."""
    right, left = row[4:6], row[6:8]
    eyes, mouth = (right + left) / 2, (row[10:12] + row[12:14]) / 2
    length = float(np.linalg.norm(right - left) + np.linalg.norm(eyes - mouth))
    angle = float(np.degrees(np.arctan2(left[1] - right[1], left[0] - right[0])))
    return length, (eyes + mouth) / 2, angle


def yunet_report(rec, data, train_found, val_found) -> None:
    side, pad = 48 * UP, 48 * UP // 2
    centre = np.array([pad + side / 2] * 2)
    geo = [yunet_geometry(b) for _, _, b in train_found]
    ratio = np.array([side / g[0] for g in geo])
    offset = np.array([(centre - g[1]) / g[0] for g in geo])  # (N, 2) in units of the length
    box_ratio = np.array([side / max(b[2], b[3]) for _, _, b in train_found])
    q, qb = np.percentile(ratio, [25, 50, 75]), np.percentile(box_ratio, [25, 50, 75])
    framing, shift = float(q[1]), np.median(offset, 0)
    print(f"  FER side / (eye distance + eyes-to-mouth): median {q[1]:.3f} (IQR {q[0]:.3f}-{q[2]:.3f})")
    print(f"  FER side / box side: median {qb[1]:.3f} (IQR {qb[0]:.3f}-{qb[2]:.3f})")
    print(f"  FER centre from the eyes-mouth midpoint: median x {shift[0]:+.3f}, y {shift[1]:+.3f} lengths")
    labels = np.array([int(data.labels[i]) for i, _, _ in val_found])
    full = rec.classify(data.images[[i for i, _, _ in val_found]])
    print(f"PublicTest: {len(val_found)} faces found once; accuracy of {rec.source}")
    print("| crop | accuracy |\n|---|---|")
    print(f"| FER-2013's own crop | {(full.argmax(1) == labels).mean():.3f} |")

    def accuracy(crops) -> float:
        return float((rec.classify(crops).argmax(1) == labels).mean())

    for k in (0.9, 0.95, 1.0, 1.05, 1.1):
        for align in (False, True) if k == 1.0 else (False,):
            crops = []
            for _, g, b in val_found:
                length, mid, angle = yunet_geometry(b)
                c, s = mid + shift * length, framing * k * length
                if align:  # rotate about the crop centre so the eyes are level
                    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, 1.0)
                    g = cv2.warpAffine(g, m, g.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
                box = np.rint([[c[0] - s / 2, c[1] - s / 2, s, s]]).astype(np.int64)
                crops.append(crop_faces(g, box)[0])
            name = f"landmarks, {k:.2f} x {framing:.2f}" + (", eyes levelled" if align else "")
            print(f"| {name} | {accuracy(crops):.3f} |")
    for k in (0.85, 0.9, 1.0, 1.1):
        crops = [crop_faces(g, square_boxes(b[:4], k))[0] for _, g, b in val_found]
        print(f"| square of the box, {k:.2f} | {accuracy(crops):.3f} |")


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
    side = 48 * UP

    train = rng.choice(np.flatnonzero(split == TRAIN), args.n, replace=False)
    found = detect_one(detector, data.images, train)
    print(f"Training: {len(found)} of {len(train)} faces found once by {args.detector}")
    val = rng.choice(np.flatnonzero(split == VAL), args.n, replace=False)
    val_found = detect_one(detector, data.images, val)
    rec = EmotionRecognizer.from_pretrained(tta="none")  # crops compared without TTA, as recorded
    if args.detector == "yunet":
        yunet_report(rec, data, found, val_found)
        return
    ratio = np.array([side / max(b[2], b[3]) for _, _, b in found])
    q = np.percentile(ratio, [25, 50, 75])
    print(f"  FER side / box side: median {q[1]:.2f} (IQR {q[0]:.2f}-{q[2]:.2f})")
    labels = np.array([int(data.labels[i]) for i, _, _ in val_found])
    full = rec.classify(data.images[[i for i, _, _ in val_found]])
    print(f"PublicTest: {len(val_found)} faces found once; accuracy of {rec.source}")
    print("| crop side / box side | accuracy |\n|---|---|")
    print(f"| FER-2013's own crop | {(full.argmax(1) == labels).mean():.3f} |")
    for framing in (0.9, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4):
        crops = [crop_faces(g, square_boxes(b, framing))[0] for _, g, b in val_found]
        print(f"| {framing:.2f} | {(rec.classify(crops).argmax(1) == labels).mean():.3f} |")


if __name__ == "__main__":
    main()
