"""Emotions of the faces in photos and video frames: read, detect, crop, classify.

    from emo import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained()          # the best bundled weights
    rec.predict("photo.jpg")     # [Face(box=(x, y, w, h), label='happy', scores={'angry': 0.01, ...})]
    rec.classify(crops)          # your own face crops (N, H, W) -> (N, C) probabilities

Faces are found by YuNet (``cv2.FaceDetectorYN``, weights bundled in ``emo/weights/detectors``)
or, with ``detector="haar"``, by OpenCV's Haar cascade, on a downscaled copy of the image. Each
box is squared and scaled to FER-2013's framing, cropped (replicating the border where it leaves
the image) and turned into network input by ``preprocess_faces``, the same transform validation
used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from emo.data.transforms import preprocess_faces
from emo.errors import EmoError
from emo.module import EmoModule, check_tta, load_checkpoint, tta_views

FACE_CASCADE = "haarcascade_frontalface_default.xml"
YUNET_PATH = Path(__file__).resolve().parent / "weights" / "detectors" / "face_detection_yunet_2023mar.onnx"
#: YuNet's crop from its landmarks: side = YUNET_FRAMING x (eye distance + eyes-to-mouth distance),
#: centred YUNET_CENTRE of that length from the eyes-mouth midpoint (x right, y down). Measured on
#: 600 Training faces (benchmarks/framing.py): landmarks vary less than YuNet's box (relative IQR
#: of FER's side 0.20 vs 0.24), and on PublicTest faces these crops score 67.3% against 68.0% for
#: FER-2013's own crops, where the best square of the box scores 65.5%.
YUNET_FRAMING = 1.40
YUNET_CENTRE = (0.0, -0.085)
#: YuNet's score needed to keep a face, chosen on PublicTest scenes (benchmarks/scenes.py).
YUNET_SCORE = 0.6
#: Crop side / Haar box side. On 1,200 PrivateTest faces (upscaled, border-padded) FER-2013's side
#: is 1.03x Haar's box (median; IQR 0.96-1.11), and cnn3's accuracy on faces re-cropped from the
#: box is flat from 0.9 to 1.1 (59-61%), then falls (54% at 1.4): benchmarks/framing.py.
HAAR_FRAMING = 1.05
#: Network inputs (faces x test-time views) per forward pass. Building every view of every crop
#: at once took 24 GB for 3,589 crops with tencrop; 256 keep a forward pass's activations to
#: ~100 MB (vgg_s) at the speed of larger batches.
CHUNK_VIEWS = 256
#: Images detected, cropped and classified together by ``predict`` on a list.
CHUNK_IMAGES = 64
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


class Face(NamedTuple):
    """One detected face: ``box`` (x, y, w, h) in image pixels, ``label``, ``scores`` and, in
    video, ``face_id`` (the same for one person across frames; ``None`` for photos)."""

    box: tuple[int, int, int, int]
    label: str
    scores: dict[str, float]  # probability per class name, in the model's class order
    face_id: int | None = None

    @property
    def probs(self) -> np.ndarray:
        return np.array(list(self.scores.values()), dtype=np.float32)  # (C,)

    def as_dict(self) -> dict[str, Any]:
        out = {"box": list(self.box), "label": self.label, "scores": dict(self.scores)}
        return out if self.face_id is None else {"face_id": self.face_id, **out}


# ----------------------------------------------------------------------------------- images
def read_image(path: str | Path) -> np.ndarray:
    """An image file as BGR uint8 (H, W, 3).

    Raises:
        EmoError: the file is missing, or not an image OpenCV can decode.
    """
    path = Path(path)
    if not path.is_file():
        raise EmoError(f"image {path} not found: check the path")
    # imdecode, not imread: imread cannot open non-ASCII paths on Windows.
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise EmoError(f"cannot read {path}: not an image, or a corrupt one (use PNG, JPEG, BMP or WebP)")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 as is; floats on the 0..1 scale (max <= 1) or 0..255; other integers if within 0..255."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image)
        scale = 255.0 if image.size and image.max() <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer) and image.size and 0 <= image.min() and image.max() <= 255:
        return image.astype(np.uint8)
    raise EmoError(f"image of dtype {image.dtype} is not supported: give uint8, or floats in 0..1 or 0..255")


def to_bgr(image: Any) -> np.ndarray:
    """A path, a PIL image or a numpy array (grey, BGR or BGRA; uint8 or float) as BGR uint8."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if type(image).__module__.startswith("PIL."):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])  # PIL is RGB
    if not isinstance(image, np.ndarray):
        raise EmoError(
            f"cannot read an image from {type(image).__name__}: give a path, numpy array or PIL image"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or not image.size:
        raise EmoError(f"image of shape {image.shape}: give (H, W) grey or (H, W, 3) BGR")
    image = to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image


def to_grey(image: Any) -> np.ndarray:
    """Any input ``to_bgr`` accepts, as grey uint8 (H, W)."""
    if isinstance(image, np.ndarray) and (image.ndim == 2 or image.shape[-1] == 1):
        if image.size == 0:
            raise EmoError(f"image of shape {image.shape} is empty")
        return np.ascontiguousarray(to_uint8(image.reshape(image.shape[:2])))
    return cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)


# -------------------------------------------------------------------------------- detection
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


def crop_faces(grey: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Square crops of a grey image (H, W); parts outside the image repeat its border pixels."""
    crops = []
    for x, y, w, h in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        if x >= 0 and y >= 0 and x + w <= grey.shape[1] and y + h <= grey.shape[0]:
            crops.append(grey[y : y + h, x : x + w])
        else:
            crops.append(cv2.getRectSubPix(grey, (int(w), int(h)), (x + (w - 1) / 2, y + (h - 1) / 2)))
    return crops


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
        small = grey
        if scale < 1.0:
            small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
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
        nms_threshold: float = 0.3,
        framing: float = YUNET_FRAMING,
        centre: tuple[float, float] = YUNET_CENTRE,
    ):
        if not hasattr(cv2, "FaceDetectorYN"):
            raise EmoError(
                f"OpenCV {cv2.__version__} has no FaceDetectorYN: pip install 'opencv-python-headless>=4.8'"
            )
        try:
            self.net = cv2.FaceDetectorYN.create(
                str(YUNET_PATH), "", (320, 320), score_threshold, nms_threshold, 64
            )
        except cv2.error as err:
            raise EmoError(
                f"cannot load YuNet from {YUNET_PATH} ({err.msg.strip()}): reinstall emo"
            ) from None
        self.size = (320, 320)
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
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        max_side, min_face = max_side or self.max_side, min_face or self.min_face
        scale = min(1.0, max_side / max(bgr.shape[:2])) if max_side else 1.0
        small = bgr
        if scale < 1.0:
            small = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
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


# -------------------------------------------------------------------------------- backends
class TorchBackend:
    """Probabilities from an :class:`EmoModule` in PyTorch.

    The network runs in channels-last layout: on CPU oneDNN's convolutions take ~40% less time
    for a single 48x48 face (cnn3: 0.77 vs 1.31 ms), with the same results.
    """

    name = "torch"

    def __init__(self, module: EmoModule, channels_last: bool = True):
        self.module = module.eval()
        if channels_last:
            self.module.use_channels_last()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, tta: str = "none") -> np.ndarray:
        return self.module.predict_proba(x, tta).numpy()  # (N, 1, S, S) -> (N, C)


class OnnxBackend:
    """Probabilities from an ONNX model (``emo-export``) in onnxruntime."""

    name = "onnx"

    def __init__(self, model: bytes | str | Path, threads: int | None = None):
        from emo.export import import_onnxruntime

        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor, tta: str = "none") -> np.ndarray:
        views = tta_views(x, tta)  # (V, N, 1, S, S): the same views as EmoModule.predict_proba
        v, n = views.shape[:2]
        probs = self.session.run(None, {self.input_name: views.flatten(0, 1).numpy()})[0]
        return probs.reshape(v, n, -1).mean(0)


#: ``onnx-int8``: the checkpoint's int8 model beside it (``<name>-int8.onnx``, from
#: ``emo-export --int8``; the bundled vgg_s has one), in onnxruntime.
BACKENDS = ("torch", "onnx", "onnx-int8")


def resolve_checkpoint(spec: str | Path | None = None) -> Path:
    """The model file meant by a bundled name, a ``.ckpt``/``.onnx`` file or a training run
    directory (its best checkpoint by validation accuracy); ``None``: the best bundled weights.

    Raises:
        EmoError: nothing of that name, or a run directory without a best checkpoint.
    """
    from emo import weights

    if spec is None or str(spec) == "":
        return weights.weights_path(weights.default_name())
    path = Path(spec)
    if path.is_dir():
        ckpts = list((path / "checkpoints").glob("best*.ckpt")) or list(path.glob("best*.ckpt"))
        if not ckpts:
            raise EmoError(
                f"no best-*.ckpt in {path} or {path / 'checkpoints'}: give an emo.train run directory"
            )
        return max(ckpts, key=_accuracy_in_name)
    if path.is_file():
        return path
    if str(spec) in weights.available():
        return weights.weights_path(str(spec))
    raise EmoError(
        f"model {spec} not found: give a .ckpt or .onnx file, a training run directory "
        f"or a bundled name ({', '.join(weights.available())})"
    )


def _accuracy_in_name(path: Path) -> tuple[float, float]:
    """``best-epoch012-acc0.6123.ckpt`` -> (0.6123, mtime); files without one sort first."""
    match = re.search(r"acc(\d+(?:\.\d+)?)", path.stem)
    return (float(match.group(1)) if match else -1.0, path.stat().st_mtime)


# ------------------------------------------------------------------------------ recognizer
class EmotionRecognizer:
    """Facial-expression recognition on photos, video frames or ready-made face crops.

    Build one with :meth:`from_pretrained` (bundled weights) or :meth:`from_checkpoint` (any emo
    checkpoint or exported ``.onnx``); class names and preprocessing come from the model file.

    Attributes:
        class_names: the classes, in the order of ``classify``'s columns.
        preprocess: the checkpoint's preprocessing (``image_size``, ``mean``, ``std``).
        detector: the face detector ``predict`` uses (:class:`YuNetDetector` by default).
        source: where the weights came from (bundled name or path), for logs.
    """

    def __init__(
        self,
        backend: TorchBackend | OnnxBackend,
        class_names: Sequence[str],
        preprocess: dict,
        detector: str | HaarDetector | YuNetDetector = "yunet",
        source: str = "",
    ):
        self.backend, self.class_names, self.preprocess = backend, list(class_names), dict(preprocess)
        self.detector = make_detector(detector)
        self.source = source

    def __repr__(self) -> str:
        return f"EmotionRecognizer({self.source!r}, backend={self.backend.name}, classes={self.class_names})"

    # ---------------------------------------------------------------------- construction
    @staticmethod
    def available() -> list[str]:
        """Names of the bundled weights (``from_pretrained(name)``)."""
        from emo import weights

        return weights.available()

    @classmethod
    def from_pretrained(cls, name: str | None = None, backend: str = "torch", **kwargs) -> EmotionRecognizer:
        """Bundled weights by name; ``None``: the one with the best recorded test accuracy.

        Args:
            backend: ``torch`` or ``onnx`` (onnxruntime, ``pip install 'emo[onnx]'``).
            **kwargs: ``threads``, ``detector`` and the detector's arguments, as in ``from_checkpoint``.
        """
        from emo import weights

        name = name or weights.default_name()
        return cls.from_checkpoint(weights.weights_path(name), backend=backend, _source=name, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        backend: str = "torch",
        threads: int | None = None,
        detector: str | HaarDetector | YuNetDetector = "yunet",
        _source: str | None = None,
        **kwargs,
    ) -> EmotionRecognizer:
        """Any emo checkpoint (``.ckpt``, any class set) or ``emo-export`` model (``.onnx``).

        Args:
            backend: ``torch``, ``onnx`` or ``onnx-int8``; an ``.onnx`` file always runs in
                onnxruntime, a checkpoint under ``onnx`` is exported once and cached, and under
                ``onnx-int8`` its ``<name>-int8.onnx`` beside it is used.
            threads: onnxruntime's thread count (default: all cores). PyTorch's is process-wide:
                set it with ``torch.set_num_threads``.
            detector: ``yunet`` (default) or ``haar``, or a detector object.
            **kwargs: passed on to the detector (``max_side``, ``min_face``, ...).

        Raises:
            EmoError: a missing or foreign file, or an unknown backend.
        """
        if backend not in BACKENDS:
            raise EmoError(f"backend {backend!r} is not valid: choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        if backend == "onnx-int8" and path.suffix != ".onnx":
            int8 = path.with_name(f"{path.stem}-int8.onnx")
            if not int8.is_file():
                raise EmoError(
                    f"no int8 model beside {path}: write {int8.name} with "
                    f"emo-export --ckpt {path} --int8 --out {int8} (needs FER-2013 to calibrate)"
                )
            path, _source = int8, _source and f"{_source}-int8"
        detector = make_detector(detector, **kwargs)
        from emo.paths import WEIGHTS_DIR

        source = _source or (path.stem if path.resolve().parent == WEIGHTS_DIR else str(path))
        if path.suffix == ".onnx":
            from emo.export import onnx_metadata

            if not path.is_file():
                raise EmoError(f"ONNX model {path} not found: write one with emo-export")
            try:
                engine = OnnxBackend(path, threads)
            except EmoError:
                raise
            except Exception as err:  # onnxruntime's own error types
                raise EmoError(
                    f"{path} is not a readable ONNX model ({type(err).__name__}): re-export it"
                ) from None
            return cls(engine, *onnx_metadata(engine.session), detector, source)
        module = load_checkpoint(path)
        if backend == "onnx":
            from emo.export import cached_onnx

            engine: TorchBackend | OnnxBackend = OnnxBackend(cached_onnx(path, module), threads)
        else:
            engine = TorchBackend(module)
        return cls(engine, module.class_names, module.preprocess, detector, source)

    # ------------------------------------------------------------------------- inference
    def face_input(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Grey crops of any sizes -> network input (N, 1, S, S), through ``preprocess_faces``."""
        size = int(self.preprocess["image_size"])
        if not len(crops):
            return torch.zeros(0, 1, size, size)
        return torch.cat([preprocess_faces(c, self.preprocess) for c in crops])

    def probs(self, crops: Sequence[np.ndarray], tta: str = "none") -> np.ndarray:
        """Probabilities (N, C) for a list of grey uint8 crops (any sizes), ``CHUNK_VIEWS`` network
        inputs at a time, so memory stays bounded however many crops there are."""
        check_tta(tta)
        out = np.zeros((len(crops), len(self.class_names)), dtype=np.float32)
        size = int(self.preprocess["image_size"])
        chunk = max(1, CHUNK_VIEWS // len(tta_views(torch.zeros(1, 1, size, size), tta)))
        for start in range(0, len(crops), chunk):
            out[start : start + chunk] = self.backend(self.face_input(crops[start : start + chunk]), tta)
        return out

    def classify(self, crops: np.ndarray | Sequence[np.ndarray], tta: str = "none") -> np.ndarray:
        """Class probabilities (N, C) for faces you cropped yourself.

        Args:
            crops: (N, H, W) grey or (N, H, W, 3) BGR, uint8 or float, any size; or a list of
                crops of different sizes; a single (H, W) crop counts as N = 1.
            tta: ``none``, ``flip`` or ``tencrop``.
        """
        if isinstance(crops, np.ndarray):
            if crops.ndim not in (2, 3, 4):
                raise EmoError(f"crops of shape {crops.shape}: give (N, H, W) grey or (N, H, W, 3) BGR")
            crops = list(crops[None] if crops.ndim == 2 else crops)
        return self.probs([to_grey(c) for c in crops], tta)

    def detect(self, image: Any) -> np.ndarray:
        """Square face boxes (K, 4) x, y, side, side of one image; may reach past its border."""
        return self.detector(to_grey(image))

    def faces(self, probs: np.ndarray, boxes: np.ndarray, shape: tuple[int, ...]) -> list[Face]:
        """Pair probabilities (K, C) with their boxes (cut to an image of ``shape``)."""
        return [
            Face(
                clip_box(box, shape),
                self.class_names[int(p.argmax())],
                {c: float(v) for c, v in zip(self.class_names, p)},
            )
            for box, p in zip(boxes, probs)
        ]

    def predict(self, image: Any, tta: str = "none") -> list[Face] | list[list[Face]]:
        """Detect the faces of an image and classify each.

        Args:
            image: a file path, a numpy array (grey or BGR, any size, uint8 or float) or a PIL
                image; or a list of these, classified in one batch.
            tta: ``none``, ``flip`` or ``tencrop``.

        Returns:
            One :class:`Face` per face found, largest first (empty when there is none); for a
            list of images, one such list per image.
        """
        check_tta(tta)
        if isinstance(image, (list, tuple)):
            out = []
            for first in range(0, len(image), CHUNK_IMAGES):  # bounded memory for long lists
                greys = [to_grey(im) for im in image[first : first + CHUNK_IMAGES]]
                boxes = [self.detector(g) for g in greys]
                crops = [c for g, b in zip(greys, boxes) for c in crop_faces(g, b)]
                probs = self.probs(crops, tta)
                start = 0
                for g, b in zip(greys, boxes):
                    out.append(self.faces(probs[start : start + len(b)], b, g.shape))
                    start += len(b)
            return out
        grey = to_grey(image)
        boxes = self.detector(grey)
        return self.faces(self.probs(crop_faces(grey, boxes), tta), boxes, grey.shape)
