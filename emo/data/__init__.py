"""FER-2013 reading, caching, splits and augmentation."""

from emo.data.datamodule import FaceDataset, FER2013DataModule
from emo.data.fer2013 import FER2013_CLASSES, load_fer2013
from emo.data.transforms import build_augment, preprocess_faces, resolve_augment

__all__ = [
    "FER2013_CLASSES",
    "FER2013DataModule",
    "FaceDataset",
    "build_augment",
    "load_fer2013",
    "preprocess_faces",
    "resolve_augment",
]
