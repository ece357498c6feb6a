"""Real-time speed: per-face classification latency, face detection cost, end-to-end FPS.

python benchmarks/realtime.py [--frames 150] [--repeat 3] [--models vgg_s cnn3]

Runs the default real-time model (``emo.realtime.load_model()``) on a synthetic 640x480 video of
one sample face (~150 px, moving), for the torch and onnxruntime backends, one inference thread.
End to end is ``emo.realtime.run`` headless: decode a frame, find the face, classify it, smooth,
draw boxes, label, bars and FPS (no window, no output file). Rows with ``detect every 1`` search
every frame in full, without the tracker, to show what the tracker saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from emo import realtime
from emo.recognizer import crop_faces
from emo.samples import moving_face_frames, write_video


def per_face_ms(model: realtime.EmotionRecognizer, crop: np.ndarray, n: int = 300) -> float:
    """Median latency of classifying one face crop: preprocessing + network + softmax."""
    for _ in range(20):
        model.probs([crop])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.probs([crop])
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def detection_ms(model: realtime.EmotionRecognizer, greys: list[np.ndarray], every: int) -> float:
    """Mean face-finding time per frame with a full search every ``every`` frames."""
    tracker = realtime.FaceTracker(model.detector, every)
    t0 = time.perf_counter()
    for g in greys:
        tracker(g)
    return 1e3 * (time.perf_counter() - t0) / len(greys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="video length (default: 150)")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs per row; best kept")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[None],
        help="bundled names or checkpoints (default: the default model)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = moving_face_frames(args.frames)
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    backends = ["torch"]
    try:
        import onnxruntime  # noqa: F401

        backends.append("onnx")
    except ImportError:
        print("onnxruntime not installed: torch only (pip install 'emo[onnx]')")
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "face.mp4", frames)
        rows = []
        for backend, name in ((b, m) for m in args.models for b in backends):
            model = realtime.load_model(name, backend=backend)
            crop = crop_faces(greys[0], model.detector(greys[0])[:1])[0]
            face = per_face_ms(model, crop)
            for every in (5, 1):
                det = detection_ms(model, greys, every)
                fps = max(
                    realtime.run(video, model=model, headless=True, detect_every=every, smooth=0.8)["fps"]
                    for _ in range(args.repeat)
                )
                rows.append((backend, model.source, face, every, det, fps))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"640x480, one face, {args.frames} frames; {os.cpu_count()} CPUs, load average {load:.1f}")
    print("| backend | model | per-face ms | detect every | detection ms/frame | end-to-end FPS |")
    print("|---|---|---|---|---|---|")
    for backend, name, face, every, det, fps in rows:
        print(f"| {backend} | {name} | {face:.2f} | {every} | {det:.2f} | {fps:.0f} |")


if __name__ == "__main__":
    main()
