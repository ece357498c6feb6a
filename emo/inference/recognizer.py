"""Emotions of the faces in photos and video frames: read, detect, crop, classify.

    from emo import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained()          # the best bundled weights
    rec.predict("photo.jpg")     # [Face(box=(x, y, w, h), label='happy', scores={'angry': 0.01, ...})]
    rec.classify(crops)          # your own face crops (N, H, W) -> (N, C) probabilities

Test-time augmentation (TTA) defaults to the one the model file records (every bundled model
records the one chosen on PublicTest, e.g. ``flip``), ``none`` for files that record none;
``tta=`` on construction or on each call overrides it. The views are built in numpy, so the
runtime is numpy, OpenCV and onnxruntime alone.

Faces are found by YuNet (``cv2.FaceDetectorYN``, weights bundled in ``emo/weights/detectors``)
or, with ``detector="haar"``, by OpenCV's Haar cascade, on a downscaled copy of the image. Each
box is squared and scaled to FER-2013's framing, cropped (replicating the border where it leaves
the image) and turned into network input by ``preprocess_faces``, the same transform validation
used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from emo import weights
from emo.errors import EmoError
from emo.inference.backends import BACKENDS, OnnxBackend, load_torch_backend, resolve_checkpoint
from emo.inference.detect import (
    HaarDetector,
    YuNetDetector,
    check_boxes,
    clip_box,
    crop_faces,
    make_detector,
    usable_boxes,
)
from emo.inference.images import MAX_PIXELS, check_max_pixels, is_file, os_reason, shown, to_grey
from emo.inference.preprocess import Preprocess, check_tta, n_views, preprocess_faces, tta_views

#: Network inputs (faces x test-time views) per forward pass. Building every view of every crop
#: at once took 24 GB for 3,589 crops with tencrop; 256 keep a forward pass's activations to
#: ~100 MB (vgg_s) at the speed of larger batches.
CHUNK_VIEWS = 256
#: Images detected, cropped and classified together by ``predict`` on a list.
CHUNK_IMAGES = 64


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


class EmotionRecognizer:
    """Facial-expression recognition on photos, video frames or ready-made face crops.

    Build one with :meth:`from_pretrained` (bundled weights) or :meth:`from_checkpoint` (any emo
    checkpoint or exported ``.onnx``); class names and preprocessing come from the model file.

    Attributes:
        class_names: the classes, in the order of ``classify``'s columns.
        preprocess: the checkpoint's preprocessing (``image_size``, ``mean``, ``std``).
        detector: the face detector ``predict`` uses (:class:`YuNetDetector` by default).
        source: where the weights came from (bundled name or path), for logs.
        tta: the test-time augmentation ``probs``, ``classify`` and ``predict`` use when given
            none: the one the model file records (every bundled model's), else ``none``.
        max_pixels: the largest image (width x height) ``predict``, ``detect`` and ``classify``
            accept when given no ``max_pixels`` of their own (``MAX_PIXELS``, 50 M): a file's
            size is read from its header and an image over the limit is refused in one line
            before it is decoded (``emo.inference.images``).
    """

    def __init__(
        self,
        backend: Callable[[np.ndarray], np.ndarray],
        class_names: Sequence[str],
        preprocess: Preprocess | dict,
        detector: str | HaarDetector | YuNetDetector = "yunet",
        source: str = "",
        tta: str = "none",
        max_pixels: int = MAX_PIXELS,
    ):
        check_tta(tta)
        self.max_pixels = check_max_pixels(max_pixels)
        self.backend, self.class_names, self.preprocess = (
            backend,
            list(class_names),
            Preprocess.of(preprocess),
        )
        self.detector = make_detector(detector)
        self.source = source
        self.tta = tta

    def __repr__(self) -> str:
        return (
            f"EmotionRecognizer({self.source!r}, backend={self.backend.name}, tta={self.tta}, "
            f"classes={self.class_names})"
        )

    # ---------------------------------------------------------------------- construction
    @staticmethod
    def available() -> list[str]:
        """Names of the bundled models (``from_pretrained(name)``)."""
        return weights.available()

    @classmethod
    def from_pretrained(
        cls, name: str | None = None, backend: str = "auto", tta: str | None = None, **kwargs
    ) -> EmotionRecognizer:
        """A bundled model by name; ``None`` or ``"default"``: the model that agrees with people
        best among the real-time ones that keep 70% FER-2013 accuracy (``emo.weights.default_name``);
        ``"fast"``: the real-time model with the fewest multiply-adds a face (for many faces or a
        slow device; less accurate than the default); ``"leaderboard"``: the best on FER-2013's own labels (the ensemble: several networks in one
        graph, their probabilities averaged, at the cost of running each on every face; FER-2013's
        labels are one yardstick: on photos no one here trained on, the default labels more faces
        the way people do); ``"ferplus"``: the model trained on FER+'s eight classes (people's
        votes, contempt included).

        Every bundled model is an ONNX file run by onnxruntime. ``backend="auto"`` runs the one
        the index records for it (``emo.weights.recorded_backend``): its static int8 file where
        that keeps the fp32 file's PublicTest accuracy within 0.3 points (``INT8_MAX_DROP``), the
        fp32 one otherwise; ``onnx`` or ``onnx-int8`` choose.

        Args:
            backend: ``auto``, ``onnx`` or ``onnx-int8``.
            tta: the default test-time augmentation; ``None``: the one the model file records
                (chosen on PublicTest, e.g. ``flip``).
            **kwargs: ``threads``, ``detector`` and the detector's arguments, as in ``from_checkpoint``.
        """
        name = weights.resolve_name(name or "default")
        if backend not in BACKENDS:
            raise EmoError(f"backend {backend!r} is not valid: choose one of {', '.join(BACKENDS)}")
        if backend == "torch":
            raise EmoError(
                "bundled models are ONNX files: use backend auto, onnx or onnx-int8 "
                "(the torch backend runs a training checkpoint: from_checkpoint('run.ckpt'))"
            )
        chosen = weights.recorded_backend(name) if backend == "auto" else backend
        path = weights.model_path(name, chosen)
        return cls.from_checkpoint(path, tta=tta, _source=name, **kwargs)

    @classmethod
    def load(cls, model: str | Path | None = None, backend: str = "auto", **kwargs) -> EmotionRecognizer:
        """What a command line's ``--model``/``--ckpt`` names: a bundled name or alias
        (``from_pretrained``, with its recorded backend), a ``.onnx``/``.ckpt`` file or a
        training run directory (``from_checkpoint`` of its best checkpoint); ``None``: the default.

        Args:
            **kwargs: ``threads``, ``tta``, ``detector`` and the detector's arguments.
        """
        if (
            model is None
            or str(model) in ("", *weights.ALIASES)
            or (str(model) in weights.available() and not is_file(Path(model)))
        ):
            return cls.from_pretrained(str(model or "default"), backend=backend, **kwargs)
        try:
            path = resolve_checkpoint(model)
        except OSError as err:  # a name the system refuses (too long)
            raise EmoError(f"model {shown(model)}: {os_reason(err)}: give a shorter path") from None
        return cls.from_checkpoint(path, backend=backend, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        backend: str = "auto",
        threads: int | None = None,
        detector: str | HaarDetector | YuNetDetector = "yunet",
        tta: str | None = None,
        max_pixels: int = MAX_PIXELS,
        _source: str | None = None,
        **kwargs,
    ) -> EmotionRecognizer:
        """Any ``emo-export`` model (``.onnx``) or, with the ``train`` extra, emo checkpoint
        (``.ckpt``, an ensemble file included); any class set.

        Args:
            backend: ``auto`` (onnxruntime for ``.onnx``, PyTorch for ``.ckpt``), ``onnx``,
                ``onnx-int8`` (the ``<name>-int8.onnx`` beside the file) or ``torch``; a
                checkpoint under ``onnx`` is exported once and cached.
            threads: onnxruntime's thread count (default: all cores). PyTorch's is process-wide:
                set it with ``torch.set_num_threads``.
            detector: ``yunet`` (default) or ``haar``, or a detector object.
            tta: the default test-time augmentation; ``None``: the one the ONNX file records
                (every bundled model records the one chosen on PublicTest), else ``none``.
            max_pixels: the largest image accepted (``MAX_PIXELS``; see the class).
            **kwargs: passed on to the detector (``max_side``, ``min_face``, ...).

        Raises:
            EmoError: a missing or foreign file, an unknown backend or TTA, a checkpoint
                without the ``train`` extra (naming ``emo-export`` and ``pip install 'emo[train]'``).
        """
        if backend not in BACKENDS:
            raise EmoError(f"backend {backend!r} is not valid: choose one of {', '.join(BACKENDS)}")
        if tta is not None:
            check_tta(tta)
        path = Path(path)
        if not is_file(path):
            raise EmoError(
                f"model file {shown(path)} not found: give a .onnx (emo-export) or .ckpt file, or a bundled name"
            )
        if backend == "onnx-int8" and not path.stem.endswith(weights.INT8_SUFFIX):
            int8 = path.with_name(f"{path.stem}{weights.INT8_SUFFIX}.onnx")
            if not is_file(int8):
                raise EmoError(
                    f"no int8 model beside {path}: write {int8.name} with "
                    f"emo-export --ckpt {path} --int8 --out {int8} (needs FER-2013 to calibrate)"
                )
            path = int8
        detector = make_detector(detector, **kwargs)
        source = _source or str(path)
        if path.suffix == ".onnx":
            if backend == "torch":
                raise EmoError(f"{path} is an ONNX model: use backend auto or onnx (torch runs a .ckpt)")
            engine = OnnxBackend(path, threads)
            meta = engine.metadata
        else:
            engine, meta = load_torch_backend(path, "onnx" if backend == "onnx" else "torch", threads)
        tta = meta.get("tta", "none") if tta is None else tta
        return cls(engine, meta["class_names"], meta["preprocess"], detector, source, tta, max_pixels)

    # ------------------------------------------------------------------------- inference
    def face_input(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Grey crops of any sizes -> network input (N, 1, S, S) float32, through ``preprocess_faces``."""
        size = int(self.preprocess.image_size)
        if not len(crops):
            return np.zeros((0, 1, size, size), np.float32)
        return np.concatenate([preprocess_faces(c, self.preprocess) for c in crops])

    def probs(self, crops: Sequence[np.ndarray], tta: str | None = None) -> np.ndarray:
        """Probabilities (N, C) for a list of grey uint8 crops (any sizes), ``CHUNK_VIEWS`` network
        inputs at a time, so memory stays bounded however many crops there are. ``tta``:
        ``None`` is the recognizer's own (``self.tta``)."""
        tta = self.tta if tta is None else tta
        chunk = max(1, CHUNK_VIEWS // n_views(tta))
        out = np.zeros((len(crops), len(self.class_names)), dtype=np.float32)
        for start in range(0, len(crops), chunk):
            out[start : start + chunk] = self.input_probs(self.face_input(crops[start : start + chunk]), tta)
        return out

    def input_probs(self, x: np.ndarray, tta: str | None = None) -> np.ndarray:
        """Probabilities (N, C) for network inputs (N, 1, S, S) already preprocessed
        (``face_input``; FER-2013's faces in evaluation), ``CHUNK_VIEWS`` views at a time."""
        tta = self.tta if tta is None else tta
        chunk = max(1, CHUNK_VIEWS // n_views(tta))
        out = np.zeros((len(x), len(self.class_names)), dtype=np.float32)
        for start in range(0, len(x), chunk):
            views = tta_views(x[start : start + chunk], tta)  # (V, n, 1, S, S)
            v, n = views.shape[:2]
            probs = self.backend(views.reshape(v * n, *views.shape[2:]))  # (V * n, C)
            out[start : start + n] = probs.reshape(v, n, -1).mean(0)
        return out

    def classify(
        self,
        crops: np.ndarray | Sequence[np.ndarray],
        tta: str | None = None,
        max_pixels: int | None = None,
    ) -> np.ndarray:
        """Class probabilities (N, C) for faces you cropped yourself.

        Args:
            crops: (N, H, W) grey or (N, H, W, 3) BGR, uint8 or float, any size; or a list of
                crops of different sizes; a single (H, W) crop counts as N = 1.
            tta: ``none``, ``flip`` or ``tencrop``; ``None``: the recognizer's own (``self.tta``).
            max_pixels: the largest crop accepted; ``None``: ``self.max_pixels``.
        """
        limit = self._limit(max_pixels)
        if isinstance(crops, np.ndarray):
            if crops.ndim not in (2, 3, 4):
                raise EmoError(f"crops of shape {crops.shape}: give (N, H, W) grey or (N, H, W, 3) BGR")
            crops = list(crops[None] if crops.ndim == 2 else crops)
        return self.probs([to_grey(c, limit) for c in crops], tta)

    def _limit(self, max_pixels: int | None) -> int:
        return check_max_pixels(self.max_pixels if max_pixels is None else max_pixels)

    def _find(self, grey: np.ndarray) -> np.ndarray:
        """The detector's boxes in a grey image, less any with no pixel inside it."""
        return usable_boxes(self.detector(grey), grey.shape)

    def detect(self, image: Any, max_pixels: int | None = None) -> np.ndarray:
        """Square face boxes (K, 4) x, y, side, side of one image; may reach past its border."""
        return self._find(to_grey(image, self._limit(max_pixels)))

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

    def predict(
        self,
        image: Any,
        tta: str | None = None,
        boxes: np.ndarray | None = None,
        max_pixels: int | None = None,
    ) -> list[Face] | list[list[Face]]:
        """Detect the faces of an image and classify each.

        Args:
            image: a file path, a numpy array (grey, BGR or BGRA, any size, any integer or float
                type) or a PIL image (any mode); or a list of these, classified in one batch.
            tta: ``none``, ``flip`` or ``tencrop``; ``None``: the recognizer's own (``self.tta``).
            boxes: for one image, faces already found (``detect``, a tracker): (K, 4) x, y, w, h
                in pixels, squares in FER-2013's framing for the best results; ``None``: detect
                them. Each box needs a pixel inside the image; one that reaches past the border
                is cut to the image grown by half its size on each side, and the part outside
                the image is filled with its border's pixels.
            max_pixels: the largest image (width x height) accepted; ``None``: ``self.max_pixels``
                (``MAX_PIXELS``, 50 M). A file's size is read from its header: an image over the
                limit is refused before it is decoded.

        Returns:
            One :class:`Face` per face found, largest first (empty when there is none); for a
            list of images, one such list per image.

        Raises:
            EmoError: an unreadable image, one over the pixel limit, or a bad box (not four
                finite numbers, or no pixel inside the image), in one line.
        """
        tta = self.tta if tta is None else tta
        check_tta(tta)
        limit = self._limit(max_pixels)
        if isinstance(image, (list, tuple)):
            if boxes is not None:
                raise EmoError("boxes= goes with one image: call predict once per image to give boxes")
            out = []
            for first in range(0, len(image), CHUNK_IMAGES):  # bounded memory for long lists
                inputs, found, shapes = [], [], []
                for im in image[first : first + CHUNK_IMAGES]:
                    # One image at a time is decoded and cropped; only its faces' network inputs
                    # (48 x 48 each) wait for the batch's one forward pass.
                    grey = to_grey(im, limit)
                    b = self._find(grey)
                    inputs.append(self.face_input(crop_faces(grey, b)))
                    found.append(b)
                    shapes.append(grey.shape)
                    del grey
                probs = self.input_probs(np.concatenate(inputs), tta)
                start = 0
                for b, shape in zip(found, shapes):
                    out.append(self.faces(probs[start : start + len(b)], b, shape))
                    start += len(b)
            return out
        grey = to_grey(image, limit)
        boxes = self._find(grey) if boxes is None else check_boxes(boxes, grey.shape)
        return self.faces(self.probs(crop_faces(grey, boxes), tta), boxes, grey.shape)
