"""Real-time emotion recognition on a webcam, a video file or a stream.

    python -m emo.realtime                                  # webcam 0, best bundled weights
    python -m emo.realtime --source clip.mp4 --headless --save out.mp4 --csv out.csv
    python -m emo.realtime --ckpt outputs/train/runs/<date> --backend onnx --smooth 0.9

Everything but :func:`run`'s loop is a pure function of a frame (``load_model``, ``detect_faces``,
``predict_faces``, ``FaceTracker``, ``Smoother``), testable on numpy arrays; only the loop opens
the camera, the window and the output files, and it closes them on every exit (q/ESC, end of the
video, Ctrl-C), so the video and the CSV are always complete.

Speed: full-frame detection dominates the cost, so it runs on a downscaled frame every
``detect_every`` frames; in between, each face is looked for only in a window around its last
box (a few times cheaper), and all faces of a frame are classified in one batch. Frames go
through the one "detect, crop, classify" path, ``EmotionRecognizer.predict``, as in emo-predict.

TTA: this path classifies without test-time augmentation (``none``) unless ``--tta`` asks for it,
even for a bundled model whose recorded TTA is ``flip``: flip would double the classification
cost of every frame. Photos (``emo-predict``, the server's ``POST /predict``) use the recorded TTA.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emo.errors import EmoError, exit_on_emo_error, prog
from emo.inference.backends import BACKENDS
from emo.inference.draw import annotate
from emo.inference.images import MAX_PIXELS, check_max_pixels, check_output, shown
from emo.inference.preprocess import TTA_MODES
from emo.inference.recognizer import EmotionRecognizer, Face
from emo.inference.video import (
    CsvLog,
    FaceTracker,
    Smoother,
    check_frame_size,
    frame_count,
    open_source,
    open_writer,
    stopped_early,
)
from emo.inference.window import Window

log = logging.getLogger(__name__)
#: Detection settings for video, per detector. The cascade's cost is set by the smallest face it
#: looks for (that face shrinks to its 24 px window): 80 px (1/6 of a 640x480 frame; a webcam
#: user's face is 100-250 px) costs 0.6x of 48 px. YuNet's cost is the pixel count: on a 640x480
#: frame shrunk to 320 px it still finds faces from ~30 px. Photos (the detectors' defaults)
#: search the frame at 640 px, down to 24-32 px faces.
REALTIME_DETECTOR = {
    "yunet": {"max_side": 320, "min_face": 40},
    "haar": {"max_side": 320, "min_face": 80, "scale_factor": 1.1, "min_neighbors": 5},
}


# ------------------------------------------------------------------------- pure functions
def load_model(
    ckpt: str | Path | None = None,
    backend: str = "auto",
    threads: int | None = 1,
    detector: str = "yunet",
    max_pixels: int = MAX_PIXELS,
    **settings: Any,
) -> EmotionRecognizer:
    """The recognizer for ``ckpt``: a bundled name, a ``.ckpt``/``.onnx`` file or a training run
    directory (its best checkpoint); ``None``: the best bundled weights.

    Args:
        threads: inference threads (onnxruntime's; for a ``.ckpt``, PyTorch's, process-wide). One:
            a face or two is too small a job to share, and cores spinning for work slow a busy machine.
        detector: ``yunet`` or ``haar``.
        max_pixels: the largest frame (width x height) accepted.
        **settings: overrides of the detector's ``REALTIME_DETECTOR`` settings.

    The recognizer's default TTA is ``none`` (for speed), not the model's recorded one.
    """
    if detector not in REALTIME_DETECTOR:
        raise EmoError(f"detector {detector!r} is not valid: choose one of {', '.join(REALTIME_DETECTOR)}")
    return EmotionRecognizer.load(
        ckpt,
        backend=backend,
        threads=threads,
        detector=detector,
        tta="none",  # real time: no second pass per face for flip
        max_pixels=max_pixels,
        **{**REALTIME_DETECTOR[detector], **settings},
    )


def detect_faces(model: EmotionRecognizer, frame: np.ndarray) -> np.ndarray:
    """Square face boxes (K, 4) x, y, side, side of a BGR or grey frame."""
    return model.detect(frame)


def predict_faces(
    model: EmotionRecognizer,
    frame: np.ndarray,
    boxes: np.ndarray | None = None,
    tta: str = "none",
    max_pixels: int | None = None,
) -> list[Face]:
    """``Face`` per face of a frame, all faces in one batch (``EmotionRecognizer.predict``).

    Args:
        boxes: faces already found (``detect_faces``, ``FaceTracker``); ``None``: detect them.
        tta: ``none`` by default, for speed, whatever the model's recorded TTA.
        max_pixels: the largest frame accepted; ``None``: the model's.
    """
    return model.predict(frame, tta, boxes=boxes, max_pixels=max_pixels)


# ----------------------------------------------------------------------------------- I/O
def run(
    source: str | int = 0,
    ckpt: str | Path | None = None,
    backend: str = "auto",
    smooth: float = 0.8,
    save: str | Path | None = None,
    csv_path: str | Path | None = None,
    headless: bool = False,
    detect_every: int = 5,
    tta: str = "none",
    max_frames: int | None = None,
    threads: int | None = 1,
    model: EmotionRecognizer | None = None,
    detector: str = "yunet",
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """Annotate a video source frame by frame until it ends, the user quits or Ctrl-C.

    ``save`` and ``csv_path`` are checked before anything runs (not folders, not the source, not
    each other, in a folder that exists or can be made and written); each is written to a
    temporary file beside it and moved into place when the loop ends, whole.

    Args:
        threads: onnxruntime's (or for a ``.ckpt``, PyTorch's) threads (``load_model``).
        model: a recognizer already loaded (``ckpt``, ``backend``, ``threads`` and ``detector``
            then unused).
        detector: ``yunet`` or ``haar``, with the ``REALTIME_DETECTOR`` settings.
        tta: ``none`` by default, for speed (not the model's recorded TTA: flip would double
            the classification cost of every frame).
        max_pixels: the largest frame (width x height) accepted; ``None``: the model's
            (``MAX_PIXELS``, 50 M).

    Returns:
        ``frames`` processed, ``seconds``, ``fps`` (processing rate), the output paths and
        ``warning`` (a file whose frames stopped before its container's count, else ``None``).
    """
    inputs = [] if str(source).isdigit() or "://" in str(source) else [source]
    if save:
        check_output(save, "--save", inputs)
    if csv_path:
        check_output(csv_path, "--csv", inputs)
    if save and csv_path and Path(save).absolute() == Path(csv_path).absolute():
        raise EmoError(f"--save and --csv are both {shown(save)}: give them different names")
    if max_pixels is not None:
        max_pixels = check_max_pixels(max_pixels)
    model = model or load_model(ckpt, backend, threads, detector, max_pixels=max_pixels or MAX_PIXELS)
    limit = model.max_pixels if max_pixels is None else max_pixels
    smoother, tracker = Smoother(smooth), FaceTracker(model.detector, detect_every)
    cap, live = open_source(source)
    try:
        check_frame_size(cap, shown(source), limit)
    except EmoError:
        cap.release()
        raise
    total = None if live else frame_count(cap)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps_in = fps_in if 1 <= fps_in <= 240 else 30.0
    writer = None
    log_csv = None
    window = None
    ended = False  # the source ran out of frames (not q, Ctrl-C or --max-frames)
    n, start, rate = 0, time.perf_counter(), 0.0
    try:
        log_csv = CsvLog(csv_path, model.class_names, inputs) if csv_path else None
        window = None if headless else Window(f"emo - {model.source}")
        last = start
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                ended = True
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            faces = smoother(predict_faces(model, grey, tracker(grey), tta, max_pixels=limit))
            now = time.perf_counter()
            rate = 1 / max(now - last, 1e-6) if n == 0 else 0.9 * rate + 0.1 / max(now - last, 1e-6)
            last = now
            shown_frame = annotate(frame, faces, fps=rate)
            if save:
                if writer is None:
                    writer = open_writer(save, fps_in, shown_frame.shape)
                writer.write(shown_frame)
            if log_csv:
                log_csv.write(n, now - start if live else n / fps_in, faces)
            n += 1
            if window is not None and not window.show(shown_frame):
                break
    except KeyboardInterrupt:
        log.warning("interrupted after %d frames; closing the outputs", n)
    finally:
        cap.release()
        # Every output is closed (and moved into place) even if another fails; the first
        # failure is raised after.
        failures = []
        for close in (
            writer.release if writer is not None else None,
            log_csv.close if log_csv else None,
            window.close if window is not None else None,
        ):
            if close is None:
                continue
            try:
                close()
            except EmoError as err:
                failures.append(err)
        if failures and sys.exc_info()[0] is None:
            raise failures[0]
    warning = stopped_early(shown(source), n, total) if ended else None
    if warning:
        log.warning("warning: %s", warning)
    seconds = time.perf_counter() - start
    return {
        "frames": n,
        "seconds": seconds,
        "fps": n / seconds if seconds > 0 else 0.0,
        "full_searches": tracker.full_searches,
        "save": str(save) if save and writer is not None else None,
        "csv": str(csv_path) if csv_path else None,
        "warning": warning,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog("python -m emo.realtime"), description=__doc__.split("\n")[0])
    p.add_argument("--source", default="0", help="webcam index, video file or stream URL (default: 0)")
    p.add_argument(
        "--model",
        "--ckpt",
        dest="ckpt",
        metavar="MODEL",
        help="a bundled name (vgg_s_people, ...) or purpose (default, fast, leaderboard, ferplus), an "
        ".onnx/.ckpt file or a training run directory (default: default)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="inference runtime (default auto: a bundled model's recorded one, onnxruntime for .onnx, torch for .ckpt)",
    )
    p.add_argument(
        "--smooth", type=float, default=0.8, help="EMA weight of past probabilities, 0 = off (default: 0.8)"
    )
    p.add_argument("--save", help="write the annotated video here (.mp4)")
    p.add_argument("--csv", help="log per-frame predictions here")
    p.add_argument("--headless", action="store_true", help="no window (servers, CI)")
    p.add_argument("--detect-every", type=int, default=5, help="full-frame face search period (default: 5)")
    p.add_argument(
        "--tta",
        default="none",
        choices=TTA_MODES,
        help="test-time augmentation (default: none, for speed, even where the model records flip)",
    )
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default: 1)")
    p.add_argument(
        "--detector", default="yunet", choices=list(REALTIME_DETECTOR), help="face detector (default: yunet)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"largest frame, width x height: a larger video is refused before it is decoded (default: {MAX_PIXELS:,})",
    )
    return p.parse_args(argv)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@exit_on_emo_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    # FFmpeg (inside OpenCV) prints an error per damaged macroblock: thousands of lines for one
    # corrupt video, which emo reports in one. A level the user set is kept.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    # `kill` (SIGTERM) ends the loop like Ctrl-C, so the video and the CSV are still complete.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.headless and not (args.save or args.csv):
        log.warning("--headless without --save or --csv: the predictions go nowhere")
    stats = run(
        source=args.source,
        ckpt=args.ckpt,
        backend=args.backend,
        smooth=args.smooth,
        save=args.save,
        csv_path=args.csv,
        headless=args.headless,
        detect_every=args.detect_every,
        tta=args.tta,
        max_frames=args.max_frames,
        threads=args.threads,
        detector=args.detector,
        max_pixels=args.max_pixels,
    )
    outputs = ", ".join(f"{k} {stats[k]}" for k in ("save", "csv") if stats[k])
    print(
        f"{stats['frames']} frames in {stats['seconds']:.1f} s ({stats['fps']:.1f} FPS)"
        + (f"; wrote {outputs}" if outputs else ""),
        file=sys.stderr,
    )
    return stats


if __name__ == "__main__":
    main()
