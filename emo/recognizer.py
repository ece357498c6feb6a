"""Emotions of the faces in photos and video frames: read, detect, crop, classify.

    from emo import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained()          # the best bundled weights
    rec.predict("photo.jpg")     # [Face(box=(x, y, w, h), label='happy', scores={'angry': 0.01, ...})]
    rec.classify(crops)          # your own face crops (N, H, W) -> (N, C) probabilities

Faces are found by OpenCV's Haar cascade, whose weights ship inside the ``opencv-python-headless``
wheel (no download, works offline), on a downscaled copy of the image. The better detectors
looked at do not ship that way: OpenCV's YuNet (``cv2.FaceDetectorYN``) needs an ONNX file that
no wheel carries, and MediaPipe 1.x's wheel holds no face-detection model (its Tasks API
downloads one) and requires opencv-contrib-python, whose ``cv2`` clashes with the headless one. Each box is squared and
scaled to FER-2013's framing, cropped (replicating the border where it leaves the image) and
turned into network input by ``preprocess_faces``, the same transform validation used.
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
#: Crop side / Haar box side. On 1,200 PrivateTest faces (upscaled, border-padded) FER-2013's side
#: is 1.03x Haar's box (median; IQR 0.96-1.11), and cnn3's accuracy on faces re-cropped from the
#: box is flat from 0.9 to 1.1 (59-61%), then falls (54% at 1.4): benchmarks/framing.py.
FRAMING = 1.05
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


class Face(NamedTuple):
    """One detected face: ``box`` (x, y, w, h) in image pixels, ``label`` and ``scores``."""

    box: tuple[int, int, int, int]
    label: str
    scores: dict[str, float]  # probability per class name, in the model's class order

    @property
    def probs(self) -> np.ndarray:
        return np.array(list(self.scores.values()), dtype=np.float32)  # (C,)

    def as_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "label": self.label, "scores": dict(self.scores)}


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
def square_boxes(boxes: np.ndarray, framing: float = FRAMING) -> np.ndarray:
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


class FaceDetector:
    """OpenCV's frontal-face Haar cascade on a downscaled grey image.

    Args:
        max_side: the image is shrunk so its longer side is at most this before detection (the
            cascade's cost grows with the pixel count; faces are still found down to
            ``min_face``).
        min_face: smallest face side to find, in pixels of the original image.
        scale_factor: the cascade's pyramid step (1.1: thorough; 1.2: about twice as fast).
        min_neighbors: overlapping detections needed to keep a face (higher: fewer false faces).
        framing: crop side / detector box side (``FRAMING``).
    """

    def __init__(
        self,
        max_side: int | None = 640,
        min_face: int = 32,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        framing: float = FRAMING,
    ):
        self.cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / FACE_CASCADE))
        if self.cascade.empty():
            raise EmoError(f"OpenCV's {FACE_CASCADE} is missing: pip install 'opencv-python-headless<5'")
        self.max_side, self.min_face = max_side, min_face
        self.scale_factor, self.min_neighbors, self.framing = scale_factor, min_neighbors, framing

    def raw(
        self,
        grey: np.ndarray,
        max_side: int | None = None,
        min_face: int | None = None,
        max_face: int | None = None,
    ) -> np.ndarray:
        """The cascade's boxes (K, 4) x, y, w, h in ``grey``'s pixels, before framing.

        ``max_side`` and ``min_face`` override the detector's own; ``max_face`` (pixels) bounds
        the search from above. The cascade's cost is set by its first pyramid level, where
        ``min_face`` shrinks to its 24 px window.
        """
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
        return np.asarray(found, dtype=np.float64).reshape(-1, 4) / scale

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        """Square face boxes (K, 4) x, y, side, side in FER-2013 framing, largest first."""
        boxes = square_boxes(self.raw(grey), self.framing)
        return boxes[np.argsort(-boxes[:, 2], kind="stable")]


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


BACKENDS = ("torch", "onnx")


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
        detector: the :class:`FaceDetector` ``predict`` uses.
        source: where the weights came from (bundled name or path), for logs.
    """

    def __init__(
        self,
        backend: TorchBackend | OnnxBackend,
        class_names: Sequence[str],
        preprocess: dict,
        detector: FaceDetector | None = None,
        source: str = "",
    ):
        self.backend, self.class_names, self.preprocess = backend, list(class_names), dict(preprocess)
        self.detector = detector or FaceDetector()
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
            **kwargs: ``threads`` and :class:`FaceDetector`'s arguments, as in ``from_checkpoint``.
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
        _source: str | None = None,
        **kwargs,
    ) -> EmotionRecognizer:
        """Any emo checkpoint (``.ckpt``, any class set) or ``emo-export`` model (``.onnx``).

        Args:
            backend: ``torch`` or ``onnx``; an ``.onnx`` file always runs in onnxruntime, and a
                checkpoint under ``onnx`` is exported once and cached.
            threads: onnxruntime's thread count (default: all cores). PyTorch's is process-wide:
                set it with ``torch.set_num_threads``.
            **kwargs: passed on to :class:`FaceDetector` (``max_side``, ``min_face``, ...).

        Raises:
            EmoError: a missing or foreign file, or an unknown backend.
        """
        if backend not in BACKENDS:
            raise EmoError(f"backend {backend!r} is not valid: choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        detector = FaceDetector(**kwargs)
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
        """Probabilities (N, C) for a list of grey uint8 crops (any sizes)."""
        check_tta(tta)
        if not len(crops):
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.asarray(self.backend(self.face_input(crops), tta), dtype=np.float32)

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
            greys = [to_grey(im) for im in image]
            boxes = [self.detector(g) for g in greys]
            crops = [c for g, b in zip(greys, boxes) for c in crop_faces(g, b)]
            probs = self.probs(crops, tta)
            out, start = [], 0
            for g, b in zip(greys, boxes):
                out.append(self.faces(probs[start : start + len(b)], b, g.shape))
                start += len(b)
            return out
        grey = to_grey(image)
        boxes = self.detector(grey)
        return self.faces(self.probs(crop_faces(grey, boxes), tta), boxes, grey.shape)
