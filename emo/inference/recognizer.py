"""Emotions of the faces in photos and video frames: read, detect, crop, classify.

    from emo import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained()          # the best bundled weights
    rec.predict("photo.jpg")     # [Face(box=(x, y, w, h), label='happy', scores={'angry': 0.01, ...})]
    rec.classify(crops)          # your own face crops (N, H, W) -> (N, C) probabilities

Test-time augmentation (TTA) defaults to the one recorded for a bundled model in
``emo/weights/index.json`` (chosen on PublicTest: ``flip`` for ``vgg_s`` and ``cnn3``), ``none``
for other checkpoints; ``tta=`` on construction or on each call overrides it.

Faces are found by YuNet (``cv2.FaceDetectorYN``, weights bundled in ``emo/weights/detectors``)
or, with ``detector="haar"``, by OpenCV's Haar cascade, on a downscaled copy of the image. Each
box is squared and scaled to FER-2013's framing, cropped (replicating the border where it leaves
the image) and turned into network input by ``preprocess_faces``, the same transform validation
used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from emo import weights
from emo.data.transforms import Preprocess, preprocess_faces
from emo.errors import EmoError
from emo.inference.backends import BACKENDS, OnnxBackend, TorchBackend, onnx_metadata
from emo.inference.detect import HaarDetector, YuNetDetector, clip_box, crop_faces, make_detector
from emo.inference.images import to_grey
from emo.models.module import check_tta, is_ensemble_file, load_checkpoint, tta_views
from emo.paths import WEIGHTS_DIR

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
            none: a bundled model's recorded one (``emo.weights.recorded_tta``), else ``none``.
    """

    def __init__(
        self,
        backend: TorchBackend | OnnxBackend,
        class_names: Sequence[str],
        preprocess: Preprocess | dict,
        detector: str | HaarDetector | YuNetDetector = "yunet",
        source: str = "",
        tta: str = "none",
    ):
        check_tta(tta)
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
        """Names of the bundled weights (``from_pretrained(name)``)."""
        return weights.available()

    @classmethod
    def from_pretrained(
        cls, name: str | None = None, backend: str = "torch", tta: str | None = None, **kwargs
    ) -> EmotionRecognizer:
        """Bundled weights by name; ``None`` or ``"default"``: the model that agrees with people best
        among the real-time ones that keep 70% FER-2013 accuracy (``emo.weights.default_name``);
        ``"leaderboard"``: the best on FER-2013's own labels.

        ``"ensemble"``, once one is bundled (``emo/weights/ensemble.ckpt``, packed with
        ``python -m emo.weights A.ckpt B.ckpt ... ensemble --fp16``): several networks whose
        probabilities are averaged (members and TTA chosen on PublicTest), for the most accuracy at
        the cost of running every member on each face; never the default (unless indexed as real
        time), on the torch backend only.

        Args:
            backend: ``torch`` or ``onnx`` (onnxruntime, ``pip install 'emo[onnx]'``; not for an
                ensemble).
            tta: the default test-time augmentation; ``None``: the model's recorded one
                (``emo.weights.recorded_tta``, e.g. ``flip``).
            **kwargs: ``threads``, ``detector`` and the detector's arguments, as in ``from_checkpoint``.
        """
        name = weights.resolve_name(name or "default")  # from_checkpoint finds its recorded TTA
        return cls.from_checkpoint(
            weights.weights_path(name), backend=backend, tta=tta, _source=name, **kwargs
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        backend: str = "torch",
        threads: int | None = None,
        detector: str | HaarDetector | YuNetDetector = "yunet",
        tta: str | None = None,
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
            tta: the default test-time augmentation; ``None``: for a bundled file
                (``emo/weights/NAME.ckpt`` or its ``NAME-int8.onnx``) the TTA recorded for it,
                for any other file ``none``.
            **kwargs: passed on to the detector (``max_side``, ``min_face``, ...).

        An ensemble file (``python -m emo.weights A.ckpt B.ckpt NAME``) runs on the torch backend,
        its members' probabilities averaged, with the same TTA handling.

        Raises:
            EmoError: a missing or foreign file, an unknown backend or TTA, an ensemble with an
                ONNX backend.
        """
        if backend not in BACKENDS:
            raise EmoError(f"backend {backend!r} is not valid: choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        if tta is None:
            bundled = path.stem.removesuffix("-int8") if path.resolve().parent == WEIGHTS_DIR else None
            tta = weights.recorded_tta(bundled) if bundled else "none"  # "none" where unrecorded
        check_tta(tta)
        if backend != "torch" and path.suffix != ".onnx" and is_ensemble_file(path):
            raise EmoError(
                f"{path} is an ensemble, which runs on backend torch only (ONNX export takes one "
                f"network): use backend='torch', or one member's checkpoint with {backend}"
            )
        if backend == "onnx-int8" and path.suffix != ".onnx":
            int8 = path.with_name(f"{path.stem}-int8.onnx")
            if not int8.is_file():
                raise EmoError(
                    f"no int8 model beside {path}: write {int8.name} with "
                    f"emo-export --ckpt {path} --int8 --out {int8} (needs FER-2013 to calibrate)"
                )
            path, _source = int8, _source and f"{_source}-int8"
        detector = make_detector(detector, **kwargs)
        source = _source or (path.stem if path.resolve().parent == WEIGHTS_DIR else str(path))
        if path.suffix == ".onnx":
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
            return cls(engine, *onnx_metadata(engine.session), detector, source, tta)
        module = load_checkpoint(path)
        if backend == "onnx":
            from emo.inference.export import cached_onnx  # only for --backend onnx: it loads the exporter

            engine: TorchBackend | OnnxBackend = OnnxBackend(cached_onnx(path, module), threads)
        else:
            engine = TorchBackend(module)
        return cls(engine, module.class_names, module.preprocess, detector, source, tta)

    # ------------------------------------------------------------------------- inference
    def face_input(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Grey crops of any sizes -> network input (N, 1, S, S), through ``preprocess_faces``."""
        size = int(self.preprocess.image_size)
        if not len(crops):
            return torch.zeros(0, 1, size, size)
        return torch.cat([preprocess_faces(c, self.preprocess) for c in crops])

    def probs(self, crops: Sequence[np.ndarray], tta: str | None = None) -> np.ndarray:
        """Probabilities (N, C) for a list of grey uint8 crops (any sizes), ``CHUNK_VIEWS`` network
        inputs at a time, so memory stays bounded however many crops there are. ``tta``:
        ``None`` is the recognizer's own (``self.tta``)."""
        tta = self.tta if tta is None else tta
        check_tta(tta)
        out = np.zeros((len(crops), len(self.class_names)), dtype=np.float32)
        size = int(self.preprocess.image_size)
        chunk = max(1, CHUNK_VIEWS // len(tta_views(torch.zeros(1, 1, size, size), tta)))
        for start in range(0, len(crops), chunk):
            out[start : start + chunk] = self.backend(self.face_input(crops[start : start + chunk]), tta)
        return out

    def classify(self, crops: np.ndarray | Sequence[np.ndarray], tta: str | None = None) -> np.ndarray:
        """Class probabilities (N, C) for faces you cropped yourself.

        Args:
            crops: (N, H, W) grey or (N, H, W, 3) BGR, uint8 or float, any size; or a list of
                crops of different sizes; a single (H, W) crop counts as N = 1.
            tta: ``none``, ``flip`` or ``tencrop``; ``None``: the recognizer's own (``self.tta``).
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

    def predict(
        self, image: Any, tta: str | None = None, boxes: np.ndarray | None = None
    ) -> list[Face] | list[list[Face]]:
        """Detect the faces of an image and classify each.

        Args:
            image: a file path, a numpy array (grey or BGR, any size, uint8 or float) or a PIL
                image; or a list of these, classified in one batch.
            tta: ``none``, ``flip`` or ``tencrop``; ``None``: the recognizer's own (``self.tta``).
            boxes: for one image, faces already found (``detect``, a tracker): (K, 4) squares;
                ``None``: detect them.

        Returns:
            One :class:`Face` per face found, largest first (empty when there is none); for a
            list of images, one such list per image.
        """
        tta = self.tta if tta is None else tta
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
        if boxes is None:
            boxes = self.detector(grey)
        return self.faces(self.probs(crop_faces(grey, boxes), tta), boxes, grey.shape)
