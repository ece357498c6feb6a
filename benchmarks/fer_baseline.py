"""The ``fer`` package (PyPI ``fer``, its default TFLite model and Haar detector) on the same video,
for benchmarks/realtime.py. Run it with a Python that has ``fer`` installed, not emo's:

    python -m venv fervenv && fervenv/bin/pip install ai-edge-litert "opencv-python-headless<5" \
        setuptools requests pandas pillow && fervenv/bin/pip install --no-deps fer
    fervenv/bin/python benchmarks/fer_baseline.py VIDEO [--repeat 3]     # prints one JSON line

``fer`` imports TensorFlow only for ``tf.lite.Interpreter`` (its default ``use_tflite=True``
path); TensorFlow has no wheel for every Python, so a stand-in module hands it LiteRT's
interpreter (``ai-edge-litert``, the same TFLite runtime). Everything else is fer's own code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types

import cv2
import numpy as np


def tensorflow_stand_in() -> None:
    try:
        import tensorflow  # noqa: F401

        return
    except ImportError:
        pass
    from ai_edge_litert.interpreter import Interpreter

    tf = types.ModuleType("tensorflow")
    tf.lite = types.SimpleNamespace(Interpreter=Interpreter)
    keras = types.ModuleType("tensorflow.keras")
    models = types.ModuleType("tensorflow.keras.models")
    models.load_model = None  # fer's Keras path (use_tflite=False), not measured
    keras.models = models
    tf.keras = keras
    sys.modules.update({"tensorflow": tf, "tensorflow.keras": keras, "tensorflow.keras.models": models})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tensorflow_stand_in()
    from fer.fer import FER

    detector = FER()  # Haar cascade, TFLite emotion model: fer's defaults
    cap = cv2.VideoCapture(args.video)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    face = np.random.default_rng(0).integers(0, 256, size=(1, 64, 64)).astype(np.float32) / 127.5 - 1
    for _ in range(20):
        detector._classify_emotions(face)
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        detector._classify_emotions(face)
        times.append(time.perf_counter() - t0)
    fps, found = 0.0, 0
    for _ in range(args.repeat):  # decode + detect + classify, as emo's end-to-end rows
        cap = cv2.VideoCapture(args.video)
        t0, n, found = time.perf_counter(), 0, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            found += len(detector.detect_emotions(frame))
            n += 1
        cap.release()
        fps = max(fps, n / (time.perf_counter() - t0))
    print(
        json.dumps(
            {"per_face_ms": 1e3 * statistics.median(times), "fps": fps, "faces": found, "frames": len(frames)}
        )
    )


if __name__ == "__main__":
    main()
