"""Face detectors, and the crops they lead to in FER-2013's framing.

YuNet (``detector="yunet"``, the default; ``cv2.FaceDetectorYN``, weights bundled in
``emo/weights/detectors``) or OpenCV's Haar cascade (``detector="haar"``), each on a downscaled
copy of the image. A detector returns square boxes x, y, side, side scaled to FER-2013's framing
(YuNet: from its eye and mouth landmarks), which ``crop_faces`` cuts out (replicating the border
where a box leaves the image; boxes are first cut to the image grown by half its size on each side,
``fit_boxes``, so a crop's memory is bounded by the image's whatever the box).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emo.errors import EmoError
from emo.paths import WEIGHTS_DIR

FACE_CASCADE = "haarcascade_frontalface_default.xml"
YUNET_PATH = WEIGHTS_DIR / "detectors" / "face_detection_yunet_2023mar.onnx"
#: The same network declaring any input size, for onnxruntime (the on-device page):
#: scripts/yunet_anysize.py writes it from YUNET_PATH.
YUNET_ANYSIZE_PATH = WEIGHTS_DIR / "detectors" / "face_detection_yunet_2023mar_anysize.onnx"
#: YuNet's crop from its landmarks: side = YUNET_FRAMING x (eye distance + eyes-to-mouth distance),
#: centred YUNET_CENTRE of that length from the eyes-mouth midpoint (x right, y down). Measured on
#: 600 Training faces (benchmarks/framing.py): landmarks vary less than YuNet's box (relative IQR
#: of FER's side 0.20 vs 0.24), and on PublicTest faces these crops score 67.3% against 68.0% for
#: FER-2013's own crops, where the best square of the box scores 65.5%.
YUNET_FRAMING = 1.40
YUNET_CENTRE = (0.0, -0.085)
#: YuNet's score needed to keep a face, chosen on PublicTest scenes (benchmarks/scenes.py).
YUNET_SCORE = 0.6
#: YuNet's non-maximum suppression: boxes overlapping a better one by more than this IoU go, and
#: only the best YUNET_TOP_K candidates take part.
YUNET_NMS = 0.3
YUNET_TOP_K = 64
#: Crop side / Haar box side. On 1,200 PrivateTest faces (upscaled, border-padded) FER-2013's side
#: is 1.03x Haar's box (median; IQR 0.96-1.11), and cnn3's accuracy on faces re-cropped from the
#: box is flat from 0.9 to 1.1 (59-61%), then falls (54% at 1.4): benchmarks/framing.py.
HAAR_FRAMING = 1.05


def square_boxes(boxes: np.ndarray, framing: float = HAAR_FRAMING) -> np.ndarray:
    """Detector boxes (K, 4) x, y, w, h -> squares of side ``framing * max(w, h)``, same centre."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    side = np.maximum(boxes[:, 2], boxes[:, 3]) * framing
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    out = np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)
    return np.rint(out).astype(np.int64)  # may reach past the image border; crop_faces pads


def clip_box(box: Sequence[int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(x, y, w, h) cut to an image of ``shape`` (H, W, ...)."""
    x, y, w, h = (int(v) for v in box)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, shape[1]), min(y + h, shape[0])
    return x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)


#: Coordinates beyond this are cut before boxes become integers (no int64 overflow).
_FAR = float(1 << 40)


def check_boxes(boxes: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Boxes given by a caller (``predict(image, boxes=...)``, a tracker) as int64 (K, 4) x, y, w, h,
    checked: finite numbers, four to a box, each with at least one pixel inside an image of
    ``shape`` (H, W, ...). Non-integer values are truncated, as ``int`` does.

    Raises:
        EmoError: one line naming the first bad box and why.
    """
    try:
        b = np.array(boxes, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise EmoError("boxes must be numbers: give (K, 4) x, y, w, h in pixels") from None
    if b.size == 0:
        return np.zeros((0, 4), np.int64)
    if b.ndim == 1 and b.size == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise EmoError(f"boxes of shape {b.shape}: give (K, 4) x, y, w, h in pixels, four numbers a box")
    bad = ~np.isfinite(b).all(1)
    if bad.any():
        raise EmoError(f"box {_shown_box(b[bad][0])} is not finite: give x, y, w, h in pixels")
    given = b
    b = np.trunc(np.clip(b, -_FAR, _FAR)).astype(np.int64)
    height, width = shape[:2]
    inside = (
        (b[:, 2] > 0)
        & (b[:, 3] > 0)
        & (b[:, 0] < width)
        & (b[:, 1] < height)
        & (b[:, 0] + b[:, 2] > 0)
        & (b[:, 1] + b[:, 3] > 0)
    )
    if not inside.all():
        box = b[~inside][0].tolist()
        why = "w and h must be positive" if box[2] <= 0 or box[3] <= 0 else "it has no pixel inside the image"
        raise EmoError(
            f"box {_shown_box(given[~inside][0])} is empty in the {width}x{height} image ({why}): "
            "give x, y, w, h in pixels"
        )
    return b


def _shown_box(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box.tolist()) + "]"


def usable_boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A detector's boxes (K, 4) less any with no pixel inside an image of ``shape``."""
    b = np.asarray(boxes).reshape(-1, 4)
    if not len(b):
        return b
    height, width = shape[:2]
    f = np.nan_to_num(b.astype(np.float64))
    keep = (f[:, 2] > 0) & (f[:, 3] > 0) & (f[:, 0] < width) & (f[:, 1] < height)
    keep &= (f[:, 0] + f[:, 2] > 0) & (f[:, 1] + f[:, 3] > 0)
    return b[keep]


def fit_boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boxes (K, 4) cut to an image of ``shape`` (H, W, ...) grown by half its height and width on
    each side: a square that reaches past the border (a face at the edge, in FER-2013's framing)
    keeps its framing, the part outside filled by ``crop_faces`` with the border's pixels, while
    a crop never holds more than 4x the image's pixels (``predict(boxes=[[0, 0, 100000,
    100000]])`` once asked for 10 GB)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.trunc(np.clip(np.nan_to_num(b), -_FAR, _FAR)).astype(np.int64)
    height, width = shape[:2]
    mx, my = width // 2, height // 2
    x0 = np.clip(b[:, 0], -mx, width + mx)
    y0 = np.clip(b[:, 1], -my, height + my)
    x1 = np.clip(b[:, 0] + b[:, 2], -mx, width + mx)
    y1 = np.clip(b[:, 1] + b[:, 3], -my, height + my)
    return np.stack([x0, y0, np.maximum(x1 - x0, 0), np.maximum(y1 - y0, 0)], axis=1)


def crop_faces(grey: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Crops of a grey image (H, W), each box first cut by ``fit_boxes``; parts outside the
    image repeat its border pixels.

    Raises:
        EmoError: a box with no pixel left (check caller boxes with ``check_boxes``).
    """
    crops = []
    for x, y, w, h in fit_boxes(boxes, grey.shape).tolist():
        if w <= 0 or h <= 0:
            raise EmoError(f"box {[x, y, w, h]} is empty: give x, y, w, h with positive w and h")
        if x >= 0 and y >= 0 and x + w <= grey.shape[1] and y + h <= grey.shape[0]:
            crops.append(grey[y : y + h, x : x + w])
        else:
            crops.append(cv2.getRectSubPix(grey, (int(w), int(h)), (x + (w - 1) / 2, y + (h - 1) / 2)))
    return crops


@contextmanager
def _opencv_warnings_off() -> Iterator[None]:
    """OpenCV 5 warns on every YuNet load that its new graph engine takes no target ("Targets are
    not supported"): harmless, emo runs it on the CPU, but it lands in every user's terminal. Its
    log level is lowered to errors for the call and then put back."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(level)


def shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (<= 1) for the search, each side at least one pixel: OpenCV's
    own rounding left a 2x4000 image shrunk to 320 px with no rows at all, and failed."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on a downscaled grey image (``detector="haar"``).

    Args:
        max_side: the image is shrunk so its longer side is at most this before detection (the
            cascade's cost grows with the pixel count; faces are still found down to
            ``min_face``).
        min_face: smallest face side to find, in pixels of the original image.
        scale_factor: the cascade's pyramid step (1.1: thorough; 1.2: about twice as fast).
        min_neighbors: overlapping detections needed to keep a face (higher: fewer false faces).
        framing: crop side / detector box side (``HAAR_FRAMING``).
    """

    def __init__(
        self,
        max_side: int | None = 640,
        min_face: int = 32,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        framing: float = HAAR_FRAMING,
    ):
        data = getattr(cv2, "data", None)
        if not hasattr(cv2, "CascadeClassifier") or data is None:
            raise EmoError(
                f"detector='haar' needs OpenCV 4 (OpenCV {cv2.__version__} has no Haar cascades): "
                "use detector='yunet', or pip install 'opencv-python-headless<5'"
            )
        self.cascade = cv2.CascadeClassifier(str(Path(data.haarcascades) / FACE_CASCADE))
        if self.cascade.empty():
            raise EmoError(f"OpenCV's {FACE_CASCADE} is missing: pip install 'opencv-python-headless<5'")
        self.max_side, self.min_face = max_side, min_face
        self.scale_factor, self.min_neighbors, self.framing = scale_factor, min_neighbors, framing

    name = "haar"
    #: Face side (px) in the shrunk search window around a tracked face (``FaceTracker``):
    #: 1.3x the cascade's 24 px window.
    track_face = 32

    def raw(
        self,
        image: np.ndarray,
        max_side: int | None = None,
        min_face: int | None = None,
        max_face: int | None = None,
        offset: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """The cascade's boxes (K, 4) x, y, w, h in ``image``'s pixels plus ``offset``, before framing.

        ``max_side`` and ``min_face`` override the detector's own; ``max_face`` (pixels) bounds
        the search from above. The cascade's cost is set by its first pyramid level, where
        ``min_face`` shrinks to its 24 px window.
        """
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        max_side, min_face = max_side or self.max_side, min_face or self.min_face
        scale = min(1.0, max_side / max(grey.shape)) if max_side else 1.0
        small = shrink(grey, scale)
        min_size = max(1, round(min_face * scale))
        max_size = round(max_face * scale) if max_face else 0
        found = self.cascade.detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
            maxSize=(max_size, max_size),
        )
        return np.asarray(found, dtype=np.float64).reshape(-1, 4) / scale + (*offset, 0, 0)

    def frame(self, raw: np.ndarray) -> np.ndarray:
        """Detector boxes (K, 4) -> square crops (K, 4) in FER-2013 framing."""
        return square_boxes(raw, self.framing)

    @property
    def raw_per_crop(self) -> float:
        """The cascade's box side / crop side."""
        return 1 / self.framing

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Square face boxes (K, 4) x, y, side, side in FER-2013 framing, largest first, of a grey
        (H, W) or BGR (H, W, 3) image."""
        boxes = self.frame(self.raw(image))
        return boxes[np.argsort(-boxes[:, 2], kind="stable")]


class YuNetDetector:
    """YuNet, a small CNN face detector (``detector="yunet"``, the default), in OpenCV's
    ``cv2.FaceDetectorYN`` on a downscaled copy of the image.

    It finds faces the Haar cascade misses (small, dim, blurred, turned; the cameraman photo)
    with fewer false faces: benchmarks/scenes.py. The weights ship inside emo
    (``emo/weights/detectors``, Apache-2.0, see its README.md).

    Args:
        max_side: the image is shrunk so its longer side is at most this before detection
            (YuNet's cost grows with the pixel count; it finds faces down to ~12 px there).
        min_face: smallest face side to keep, in pixels of the original image.
        score_threshold: YuNet's face score needed to keep a box (higher: fewer false faces).
        framing: crop side / (eye distance + eyes-to-mouth distance) (``YUNET_FRAMING``).
        centre: crop centre from the eyes-mouth midpoint, in the same length (``YUNET_CENTRE``).
    """

    name = "yunet"

    def __init__(
        self,
        max_side: int | None = 640,
        min_face: int = 24,
        score_threshold: float = YUNET_SCORE,
        nms_threshold: float = YUNET_NMS,
        framing: float = YUNET_FRAMING,
        centre: tuple[float, float] = YUNET_CENTRE,
    ):
        if not hasattr(cv2, "FaceDetectorYN"):
            raise EmoError(
                f"OpenCV {cv2.__version__} has no FaceDetectorYN: pip install 'opencv-python-headless>=4.8'"
            )
        try:
            with _opencv_warnings_off():
                self.net = cv2.FaceDetectorYN.create(
                    str(YUNET_PATH), "", (320, 320), score_threshold, nms_threshold, YUNET_TOP_K
                )
        except cv2.error as err:
            raise EmoError(
                f"cannot load YuNet from {YUNET_PATH} ({err.msg.strip()}): reinstall emo"
            ) from None
        self.size = (320, 320)
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, YUNET_TOP_K
        self.max_side, self.min_face = max_side, min_face
        self.framing, self.centre = framing, centre

    #: YuNet's box side / crop side (benchmarks/framing.py: FER's side is 0.99x the box).
    raw_per_crop = 1.0
    #: Face side (px) in the shrunk search window around a tracked face (``FaceTracker``).
    track_face = 64

    def raw(
        self,
        image: np.ndarray,
        max_side: int | None = None,
        min_face: int | None = None,
        max_face: int | None = None,
        offset: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """YuNet's rows (K, 15) in ``image``'s pixels plus ``offset``: x, y, w, h, five landmarks
        (right eye, left eye, nose tip, mouth corners) as x, y pairs, and the score; boxes
        outside [``min_face``, ``max_face``] dropped. ``max_side`` and ``min_face`` override the
        detector's own."""
        max_side, min_face = max_side or self.max_side, min_face or self.min_face
        scale = min(1.0, max_side / max(image.shape[:2])) if max_side else 1.0
        small = shrink(image, scale)  # then made BGR: a grey frame is never copied 3x at full size
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        size = (small.shape[1], small.shape[0])
        if size != self.size:
            self.net.setInputSize(size)
            self.size = size
        _, found = self.net.detect(small)
        if found is None:
            return np.zeros((0, 15))
        found = found.astype(np.float64)
        found[:, :14] /= scale
        found[:, [0, 4, 6, 8, 10, 12]] += offset[0]  # x of the box and the landmarks
        found[:, [1, 5, 7, 9, 11, 13]] += offset[1]
        side = found[:, 2:4].max(1)
        keep = (side >= min_face) & (side <= max_face if max_face else True)
        return found[keep]

    def frame(self, raw: np.ndarray) -> np.ndarray:
        """YuNet's rows (K, 15) -> square crops (K, 4) x, y, side, side in FER-2013 framing."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, 15)
        eyes = (raw[:, 4:6] + raw[:, 6:8]) / 2
        mouth = (raw[:, 10:12] + raw[:, 12:14]) / 2
        length = np.linalg.norm(raw[:, 4:6] - raw[:, 6:8], axis=1) + np.linalg.norm(eyes - mouth, axis=1)
        centre = (eyes + mouth) / 2 + np.asarray(self.centre) * length[:, None]
        side = self.framing * length
        out = np.stack([centre[:, 0] - side / 2, centre[:, 1] - side / 2, side, side], axis=1)
        return np.rint(out).astype(np.int64)  # may reach past the image border; crop_faces pads

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Square face boxes (K, 4) x, y, side, side in FER-2013 framing, largest first, of a grey
        (H, W) or BGR (H, W, 3) image."""
        boxes = self.frame(self.raw(image))
        return boxes[np.argsort(-boxes[:, 2], kind="stable")]


DETECTORS = {"yunet": YuNetDetector, "haar": HaarDetector}


def make_detector(
    detector: str | HaarDetector | YuNetDetector = "yunet", **kwargs: Any
) -> HaarDetector | YuNetDetector:
    """A face detector by name (``yunet``, ``haar``) with its keyword arguments, or one as given.

    Raises:
        EmoError: an unknown name, or arguments the detector does not take.
    """
    if not isinstance(detector, str):
        return detector
    if detector not in DETECTORS:
        raise EmoError(f"detector {detector!r} is not valid: choose one of {', '.join(DETECTORS)}")
    cls = DETECTORS[detector]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise EmoError(f"detector={detector}: {err}") from None
