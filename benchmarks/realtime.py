"""Real-time speed: per-face classification latency, face detection cost, end-to-end FPS, window FPS,
and the ``fer`` package measured in the same run.

python benchmarks/realtime.py [--frames 150] [--repeat 2] [--fer-python fervenv/bin/python]

Runs the default real-time model (``emo.inference.realtime.load_model()``) on a synthetic 640x480 video of
one sample face (~150 px, moving), one inference thread, for each backend (``auto``: the one
``from_pretrained`` runs, the recorded int8 file; onnxruntime fp32 and int8; and where the train
extra and the source checkout's ``.ckpt`` are there, PyTorch) and detector (YuNet, Haar). End to end is ``emo.inference.realtime.run`` headless:
decode a frame, find the face (a full search every ``detect every`` frames, tracking between),
classify it, smooth, draw boxes, label, bars and FPS. "per-face ms" is ``probs`` on one crop
(preprocessing + network + softmax); "network ms" the network alone on one prepared face, the
quantity fer's ``_classify_emotions`` times. With a display (``DISPLAY``), "window FPS" is how
many 640x480 frames a second the window shows (OpenCV's, or tkinter's with the headless OpenCV). ``--fer-python``: a Python with the
``fer`` package (see benchmarks/fer_baseline.py) runs fer's defaults on the same video.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from emo import weights
from emo.errors import EmoError
from emo.inference import realtime, video
from emo.inference.detect import crop_faces
from emo.samples import moving_face_frames, write_video

HERE = Path(__file__).resolve().parent


def median_ms(fn, n: int = 300) -> float:
    for _ in range(30):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def detection_ms(model: realtime.EmotionRecognizer, greys: list[np.ndarray], every: int) -> float:
    """Mean face-finding time per frame with a full search every ``every`` frames."""
    tracker = video.FaceTracker(model.detector, every)
    t0 = time.perf_counter()
    for g in greys:
        tracker(g)
    return 1e3 * (time.perf_counter() - t0) / len(greys)


def window_fps(frames: list[np.ndarray], n: int = 200) -> tuple[float, str] | None:
    """Frames per second the real-time window shows, and its kind (None without a display)."""
    if not os.environ.get("DISPLAY"):
        return None
    window = realtime.Window("emo benchmark")
    shown = [realtime.annotate(f, [], fps=30.0) for f in frames]
    window.show(shown[0])  # opens it
    t0 = time.perf_counter()
    for i in range(n):
        window.show(shown[i % len(shown)])
    rate = n / (time.perf_counter() - t0)
    window.close()
    return rate, window.kind


def fer_baseline(python: str, video: Path, repeat: int) -> dict | None:
    out = subprocess.run(
        [python, str(HERE / "fer_baseline.py"), str(video), "--repeat", str(repeat)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode:
        print(f"fer baseline failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="video length (default: 150)")
    parser.add_argument("--repeat", type=int, default=2, help="end-to-end runs per row; best kept")
    parser.add_argument("--fer-python", default=os.environ.get("EMO_FER_PYTHON"), help="a Python with fer")
    args = parser.parse_args()
    frames = moving_face_frames(args.frames)
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    backends = ["auto", "onnx", "onnx-int8"]
    try:
        import torch

        torch.set_num_threads(1)
        ckpt = weights.checkpoint_path(weights.default_name())  # the source checkout's .ckpt
        backends.append("torch")
    except (ImportError, EmoError) as err:
        ckpt = None
        print(f"no torch row: {err}")
    # (backend, detector, detect every): the default path and what each choice costs.
    runs = [(b, "yunet", 5) for b in backends] + [
        ("auto", "yunet", 1),
        ("auto", "haar", 5),
        ("auto", "haar", 1),
    ]
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 has no Haar cascades
        runs = [r for r in runs if r[1] != "haar"]
    faces, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "face.mp4", frames)
        for backend, detector, every in runs:
            model = realtime.load_model(
                ckpt if backend == "torch" else None, backend=backend, detector=detector
            )
            if backend not in faces:
                crop = crop_faces(greys[0], model.detector(greys[0])[:1])[0]
                x = model.face_input([crop])
                faces[backend] = (
                    f"{model.source} ({model.backend.name})",
                    median_ms(lambda m=model, c=crop: m.probs([c])),
                    median_ms(lambda m=model, x=x: m.backend(x)),
                )
            det = detection_ms(model, greys, every)
            fps = max(
                realtime.run(video, model=model, headless=True, detect_every=every, smooth=0.8)["fps"]
                for _ in range(args.repeat)
            )
            rows.append((backend, detector, every, det, fps))
        fer = fer_baseline(args.fer_python, video, args.repeat) if args.fer_python else None
    shown = window_fps(frames)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"640x480, one face, {args.frames} frames; {os.cpu_count()} CPUs, load average {load:.1f}; one thread"
    )
    print("\n| backend | model | per-face ms | network ms |\n|---|---|---|---|")
    for backend, (name, face, net) in faces.items():
        print(f"| {backend} | {name} | {face:.2f} | {net:.2f} |")
    if fer:
        print(f"| fer (TFLite) | fer {fer['frames']}-frame run | | {fer['per_face_ms']:.2f} |")
    print(
        "\n| backend | detector | detect every | detection ms/frame | end-to-end FPS |\n|---|---|---|---|---|"
    )
    for backend, detector, every, det, fps in rows:
        print(f"| {backend} | {detector} | {every} | {det:.2f} | {fps:.0f} |")
    if fer:
        print(f"| fer (TFLite) | fer's Haar | 1 | | {fer['fps']:.1f} |")
        best = max(fps for b, d, e, _, fps in rows if d == "yunet" and e == 5)
        fastest = min(net for _, _, net in faces.values())
        print(
            f"\nemo (YuNet, tracking) / fer end-to-end FPS: {best / fer['fps']:.1f}x (bar: >= 3x); "
            f"fastest emo network {fastest:.2f} ms vs fer's {fer['per_face_ms']:.2f} ms per face"
        )
    if shown is not None:
        print(f"\nwindow: {shown[0]:.0f} FPS shown at 640x480 ({shown[1]} window)")


if __name__ == "__main__":
    main()
