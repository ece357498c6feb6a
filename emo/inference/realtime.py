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
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from emo.errors import EmoError, exit_on_emo_error
from emo.inference.backends import BACKENDS, resolve_checkpoint
from emo.inference.draw import annotate
from emo.inference.recognizer import EmotionRecognizer, Face
from emo.inference.video import CsvLog, FaceTracker, Smoother, open_source, open_writer
from emo.models.module import TTA_MODES

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
QUIT_KEYS = {ord("q"), ord("Q"), 27}  # 27: ESC


# ------------------------------------------------------------------------- pure functions
def load_model(
    ckpt: str | Path | None = None,
    backend: str = "torch",
    threads: int | None = 1,
    detector: str = "yunet",
    **settings: Any,
) -> EmotionRecognizer:
    """The recognizer for ``ckpt``: a bundled name, a ``.ckpt``/``.onnx`` file or a training run
    directory (its best checkpoint); ``None``: the best bundled weights.

    Args:
        threads: inference threads (onnxruntime's; PyTorch's are set by ``run``). One: a face
            or two is too small a job to share, and cores spinning for work slow a busy machine.
        detector: ``yunet`` or ``haar``.
        **settings: overrides of the detector's ``REALTIME_DETECTOR`` settings.

    The recognizer's default TTA is ``none`` (for speed), not the model's recorded one.
    """
    if detector not in REALTIME_DETECTOR:
        raise EmoError(f"detector {detector!r} is not valid: choose one of {', '.join(REALTIME_DETECTOR)}")
    return EmotionRecognizer.from_checkpoint(
        resolve_checkpoint(ckpt),
        backend=backend,
        threads=threads,
        detector=detector,
        tta="none",  # real time: no second pass per face for flip
        **{**REALTIME_DETECTOR[detector], **settings},
    )


def detect_faces(model: EmotionRecognizer, frame: np.ndarray) -> np.ndarray:
    """Square face boxes (K, 4) x, y, side, side of a BGR or grey frame."""
    return model.detect(frame)


def predict_faces(
    model: EmotionRecognizer, frame: np.ndarray, boxes: np.ndarray | None = None, tta: str = "none"
) -> list[Face]:
    """``Face`` per face of a frame, all faces in one batch (``EmotionRecognizer.predict``).

    Args:
        boxes: faces already found (``detect_faces``, ``FaceTracker``); ``None``: detect them.
        tta: ``none`` by default, for speed, whatever the model's recorded TTA.
    """
    return model.predict(frame, tta, boxes=boxes)


# ----------------------------------------------------------------------------------- I/O
#: matplotlib backends that draw to files or notebooks, not to a window.
NON_GUI_BACKENDS = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}


class Window:
    """A display window: OpenCV's, or matplotlib's where OpenCV is the headless build.

    The matplotlib window (TkAgg, QtAgg, GTK, macOS: whichever matplotlib picks for the desktop)
    shows the frame at its own size, 1:1: each frame is copied into the canvas's pixels and
    blitted, with no matplotlib redraw (``window FPS`` in benchmarks/realtime.py). q, ESC or
    closing the window quits.
    """

    def __init__(self, title: str = "emo"):
        self.title, self.quit = title, False
        self.fig = self.image = None
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            self.kind = "cv2"
        except cv2.error:
            self.kind = "matplotlib"
            self.backend = gui_backend()

    def _open_matplotlib(self, shape: tuple[int, ...]) -> None:
        import matplotlib.pyplot as plt

        height, width = shape[:2]
        dpi = 100
        with plt.rc_context({"toolbar": "None"}):  # a toolbar widens the window and rescales the frame
            self.fig = plt.figure(num=self.title, figsize=(width / dpi, height / dpi), dpi=dpi)
        ax = self.fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        self.image = ax.imshow(np.zeros((height, width, 3), np.uint8), interpolation="nearest")
        self.fig.canvas.mpl_connect("key_press_event", self._on_key)
        self.fig.canvas.mpl_connect("close_event", lambda _: setattr(self, "quit", True))
        plt.show(block=False)
        self.fig.canvas.draw()
        self.fig.canvas.flush_events()

    def _on_key(self, event) -> None:
        if event.key in ("q", "Q", "escape"):
            self.quit = True

    def show(self, frame: np.ndarray) -> bool:
        """Draw a BGR frame; False once the user asked to quit (q, ESC, window closed)."""
        if self.kind == "cv2":
            cv2.imshow(self.title, frame)
            key = cv2.waitKey(1) & 0xFF
            closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
            return not (key in QUIT_KEYS or closed)
        if self.fig is None:
            self._open_matplotlib(frame.shape)
        if self.quit:
            return False
        rgb = frame[..., ::-1]
        canvas = self.fig.canvas
        pixels = self._pixels()
        if pixels is not None:  # Agg-based canvases: the frame goes straight into their pixels
            if pixels.shape[:2] != rgb.shape[:2]:  # a resized window, or a HiDPI screen
                rgb = cv2.resize(rgb, pixels.shape[1::-1], interpolation=cv2.INTER_AREA)
            pixels[..., :3] = rgb
            pixels[..., 3] = 255
        else:
            self.image.set_data(rgb)
            self.image.axes.draw_artist(self.image)
        canvas.blit(self.fig.bbox)
        canvas.flush_events()  # keys, close and resize events
        return not self.quit

    def _pixels(self) -> np.ndarray | None:
        """The canvas's RGBA pixels (H, W, 4), writable; None where the canvas is not Agg's.

        Drawing the frame as a matplotlib image resamples it through Agg: ~90 ms for 640x480 on
        a busy 2-core machine, against ~7 ms for copying it in and blitting.
        """
        try:
            pixels = np.asarray(self.fig.canvas.get_renderer().buffer_rgba())
        except AttributeError:
            return None
        return pixels if pixels.ndim == 3 and pixels.flags.writeable else None

    def close(self) -> None:
        if self.kind == "cv2":
            cv2.destroyWindow(self.title)
        elif self.fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self.fig)


def gui_backend() -> str:
    """The matplotlib backend that can open a window here (matplotlib picks it for the desktop).

    Raises:
        EmoError: there is no display, or no GUI toolkit matplotlib can use.
    """
    import matplotlib.pyplot as plt

    backend = plt.get_backend().lower()
    if backend in NON_GUI_BACKENDS or "inline" in backend:
        raise EmoError(
            "no window can be opened (no display, or no GUI toolkit for matplotlib such as tkinter; "
            "opencv-python-headless has none): pass --headless with --save/--csv"
        )
    return backend


def run(
    source: str | int = 0,
    ckpt: str | Path | None = None,
    backend: str = "torch",
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
) -> dict[str, Any]:
    """Annotate a video source frame by frame until it ends, the user quits or Ctrl-C.

    Args:
        threads: PyTorch's and onnxruntime's threads (``load_model``); ``None``: leave as is.
        model: a recognizer already loaded (``ckpt``, ``backend``, ``threads`` and ``detector``
            then unused).
        detector: ``yunet`` or ``haar``, with the ``REALTIME_DETECTOR`` settings.
        tta: ``none`` by default, for speed (not the model's recorded TTA: flip would double
            the classification cost of every frame).

    Returns:
        ``frames`` processed, ``seconds``, ``fps`` (processing rate) and the output paths.
    """
    if threads:
        torch.set_num_threads(threads)
    model = model or load_model(ckpt, backend, threads, detector)
    smoother, tracker = Smoother(smooth), FaceTracker(model.detector, detect_every)
    cap, live = open_source(source)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps_in = fps_in if 1 <= fps_in <= 240 else 30.0
    writer: cv2.VideoWriter | None = None
    log_csv = CsvLog(csv_path, model.class_names) if csv_path else None
    window = None
    n, start, rate = 0, time.perf_counter(), 0.0
    try:
        window = None if headless else Window(f"emo - {model.source}")
        last = start
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            faces = smoother(predict_faces(model, grey, tracker(grey), tta))
            now = time.perf_counter()
            rate = 1 / max(now - last, 1e-6) if n == 0 else 0.9 * rate + 0.1 / max(now - last, 1e-6)
            last = now
            shown = annotate(frame, faces, fps=rate)
            if save:
                if writer is None:
                    writer = open_writer(save, fps_in, shown.shape)
                writer.write(shown)
            if log_csv:
                log_csv.write(n, now - start if live else n / fps_in, faces)
            n += 1
            if window is not None and not window.show(shown):
                break
    except KeyboardInterrupt:
        log.warning("interrupted after %d frames; closing the outputs", n)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if log_csv:
            log_csv.close()
        if window is not None:
            window.close()
    seconds = time.perf_counter() - start
    return {
        "frames": n,
        "seconds": seconds,
        "fps": n / seconds if seconds > 0 else 0.0,
        "full_searches": tracker.full_searches,
        "save": str(save) if save and writer is not None else None,
        "csv": str(csv_path) if csv_path else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emo.realtime", description=__doc__.split("\n")[0])
    p.add_argument("--source", default="0", help="webcam index, video file or stream URL (default: 0)")
    p.add_argument(
        "--ckpt", help="bundled name, .ckpt/.onnx file or training run directory (default: best bundled)"
    )
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="inference runtime (default: torch)")
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
    return p.parse_args(argv)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@exit_on_emo_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
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
