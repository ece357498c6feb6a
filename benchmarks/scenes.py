"""End-to-end accuracy in scenes: FER-2013 faces placed in 640x480 frames, found and classified
through the public API (``EmotionRecognizer.predict``), per face detector.

python benchmarks/scenes.py [DATA_DIR] --split PublicTest [--faces 2000] [--detectors yunet haar]

Each scene is a plain (gradient) or cluttered (shapes, lines, texture) background with one face,
or 2-4 faces in a quarter of the scenes, of 60-240 px, placed without overlap; a third of the
scenes are then made darker or brighter, with less contrast, and a quarter blurred. 200 more
frames hold no face. Per detector it prints:

- faces found: a face counts as found when a returned box overlaps its own crop (IoU >= 0.4);
- false faces: returned boxes that overlap no face, and the share of face-free frames with none;
- end-to-end accuracy: faces found *and* labelled correctly, over all faces placed;
- crop accuracy: the same model on the same faces as FER-2013's own 48x48 crops (the ceiling);
- ms per frame: ``predict`` on one frame (detection, cropping, classification).

Tune on PublicTest (the validation split); report PrivateTest, once.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from emo import EmotionRecognizer
from emo.data import load_fer2013
from emo.data.fer2013 import USAGE_TO_SPLIT

WIDTH, HEIGHT = 640, 480
SIDES = (60, 240)
FACE_FREE = 200


@dataclass
class Scene:
    image: np.ndarray  # BGR (H, W, 3)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # the faces' crops, x, y, s, s
    faces: list[int] = field(default_factory=list)  # their indices in the dataset


def background(rng: np.random.Generator, cluttered: bool) -> np.ndarray:
    """A plain two-colour gradient, or one covered with shapes, lines and a texture."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, WIDTH if rng.random() < 0.5 else HEIGHT)[:, None]
    ramp = (a * (1 - t) + b * t).astype(np.uint8)  # (L, 3)
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = ramp[None, :, :] if len(ramp) == WIDTH else ramp[:, None, :]
    if not cluttered:
        return img
    for _ in range(rng.integers(8, 25)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        w, h = int(rng.integers(10, 200)), int(rng.integers(10, 200))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1 if rng.random() < 0.6 else 3)
        elif kind == 1:
            cv2.ellipse(img, (x, y), (w // 2, h // 2), float(rng.integers(180)), 0, 360, colour, -1)
        else:
            cv2.line(img, (x, y), (x + w, y + h), colour, int(rng.integers(1, 8)))
    noise = cv2.resize(rng.normal(0, 25, (HEIGHT // 8, WIDTH // 8, 3)), (WIDTH, HEIGHT))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def place(rng: np.random.Generator, sides: list[int]) -> list[tuple[int, int, int, int]] | None:
    """Non-overlapping squares of the given sides inside the frame (None if they do not fit)."""
    boxes: list[tuple[int, int, int, int]] = []
    for s in sides:
        for _ in range(50):
            x, y = int(rng.integers(0, WIDTH - s + 1)), int(rng.integers(0, HEIGHT - s + 1))
            if all(x + s <= bx or bx + bs <= x or y + s <= by or by + bs <= y for bx, by, bs, _ in boxes):
                boxes.append((x, y, s, s))
                break
        else:
            return None
    return boxes


def make_scenes(
    images: np.ndarray, idx: np.ndarray, seed: int = 0, face_free: int = FACE_FREE
) -> Iterator[Scene]:
    """Scenes holding every face of ``idx`` once, then ``face_free`` frames with no face (made
    one at a time: 2,000 frames would hold 1.8 GB)."""
    rng = np.random.default_rng(seed)
    queue = list(idx)
    while queue:
        n = 1 if rng.random() < 0.75 else int(rng.integers(2, 5))
        faces, queue = queue[:n], queue[n:]
        boxes = None
        while boxes is None:
            boxes = place(
                rng, sorted((int(rng.integers(SIDES[0], SIDES[1] + 1)) for _ in faces), reverse=True)
            )
        img = background(rng, cluttered=rng.random() < 0.5).astype(np.float32)
        for i, (x, y, s, _) in zip(faces, boxes):
            face = cv2.resize(images[i], (s, s), interpolation=cv2.INTER_CUBIC)
            img[y : y + s, x : x + s] = face[..., None]
        yield Scene(light_and_blur(rng, img), list(boxes), [int(i) for i in faces])
    for _ in range(face_free):
        img = background(rng, cluttered=rng.random() < 0.5).astype(np.float32)
        yield Scene(light_and_blur(rng, img))


def light_and_blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    if rng.random() < 1 / 3:  # dim or bright, flatter
        img = img * rng.uniform(0.4, 1.3) + rng.uniform(-30, 40)
        img = (img - img.mean()) * rng.uniform(0.6, 1.0) + img.mean()
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 2.5))
    return np.clip(img, 0, 255).astype(np.uint8)


def iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


def score(rec: EmotionRecognizer, scenes: Iterable[Scene], labels: np.ndarray, min_iou: float = 0.4) -> dict:
    """Run ``rec.predict`` frame by frame and match its faces to the placed ones."""
    n_faces = found = correct = false = 0
    free_clean = free_total = 0
    times = []
    rec.predict(np.zeros((HEIGHT, WIDTH, 3), np.uint8))  # warm-up
    for scene in scenes:
        n_faces += len(scene.boxes)
        t0 = time.perf_counter()
        faces = rec.predict(scene.image)
        times.append(time.perf_counter() - t0)
        used = set()
        for gt, i in zip(scene.boxes, scene.faces):
            overlaps = [(iou(gt, f.box), j) for j, f in enumerate(faces) if j not in used]
            best = max(overlaps, default=(0.0, -1))
            if best[0] >= min_iou:
                used.add(best[1])
                found += 1
                correct += rec.class_names.index(faces[best[1]].label) == labels[i]
        false += len(faces) - len(used)
        if not scene.boxes:
            free_total += 1
            free_clean += not faces
    return {
        "faces": n_faces,
        "frames": len(times),
        "face_free": free_total,
        "found": found / n_faces,
        "false": false,
        "free_clean": free_clean / max(free_total, 1),
        "end_to_end": correct / n_faces,
        "ms": 1e3 * float(np.mean(times)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    parser.add_argument("--split", default="PublicTest", choices=list(USAGE_TO_SPLIT))
    parser.add_argument("--faces", type=int, default=2000, help="faces of the split to place (default: 2000)")
    parser.add_argument("--detectors", nargs="+", default=["yunet", "haar"])
    parser.add_argument(
        "--yunet-scores", nargs="+", type=float, help="YuNet score thresholds to compare (default: emo's)"
    )
    parser.add_argument("--model", help="bundled name or checkpoint (default: the best bundled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = load_fer2013(args.data_dir)
    split = np.flatnonzero(np.asarray(data.split) == USAGE_TO_SPLIT[args.split])
    idx = np.random.default_rng(args.seed).choice(split, min(args.faces, len(split)), replace=False)
    labels = np.asarray(data.labels)
    rows = []
    runs = [(name, {}) for name in args.detectors if name != "yunet" or not args.yunet_scores]
    runs += [("yunet", {"score_threshold": t}) for t in args.yunet_scores or []]
    crop_acc = None
    for name, kwargs in runs:
        rec = EmotionRecognizer.from_checkpoint(  # without TTA, as the recorded numbers
            _ckpt(args.model), detector=name, tta="none", _source=args.model, **kwargs
        )
        if crop_acc is None:
            crop_acc = float((rec.classify(data.images[idx]).argmax(1) == labels[idx]).mean())
        r = score(rec, make_scenes(data.images, idx, args.seed), labels)
        label = name + (f" (score {kwargs['score_threshold']})" if kwargs else "")
        rows.append((label, r, crop_acc, rec.source))
    print(
        f"{args.split}: {r['faces']} faces in {r['frames'] - r['face_free']} scenes of {WIDTH}x{HEIGHT} "
        f"+ {r['face_free']} face-free frames (seed {args.seed}); model {rows[0][3]}; {os.cpu_count()} CPUs"
    )
    print(
        "| detector | faces found | false faces | face-free frames clean | end-to-end acc | crop acc | ms/frame |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r, crop_acc, _ in rows:
        print(
            f"| {name} | {r['found']:.1%} | {r['false']} | {r['free_clean']:.1%} | {r['end_to_end']:.1%} "
            f"| {crop_acc:.1%} | {r['ms']:.1f} |"
        )


def _ckpt(model: str | None):
    from emo.inference.backends import resolve_checkpoint  # only when a model is benchmarked

    return resolve_checkpoint(model)


if __name__ == "__main__":
    main()
