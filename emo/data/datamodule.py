"""FER-2013 as a LightningDataModule: official splits, class subsets, augmentation presets."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emo.data.fer2013 import (
    FER2013_CLASSES,
    FER2013_MEAN,
    FER2013_STD,
    IMAGE_SIZE,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
    FerArrays,
    load_fer2013,
)
from emo.data.transforms import build_augment, preprocess_faces, resolve_augment
from emo.errors import EmoError

log = logging.getLogger(__name__)


class FaceDataset(Dataset):
    """(N, 48, 48) uint8 faces and labels; optional albumentations pipeline, then normalisation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, preprocess: Mapping, augment=None):
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        self.preprocess, self.augment = dict(preprocess), augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        return preprocess_faces(img, self.preprocess)[0], self.labels[i]  # (1, 48, 48), ()


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask choosing ``fraction`` of each class, reproducibly."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[rng.choice(idx, size=max(1, round(fraction * len(idx))), replace=False)] = True
    return mask


class FER2013DataModule(L.LightningDataModule):
    """FER-2013 with Training -> train, PublicTest -> val, PrivateTest -> test.

    Args:
        data_dir: folder with FER-2013 in any supported layout (see ``emo.data.fer2013``).
        cache_dir: where the decoded array is cached (``None``: ``$EMO_CACHE_DIR`` or ~/.cache/emo).
        classes: class names to keep, in the order of the new labels; ``None`` keeps all seven.
        augment: preset name (``none``/``light``/``strong``) or its dict of flags.
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        on_bad_row: ``error`` or ``skip`` malformed rows.
        val_fraction: hold-out size when the layout has no official validation split.
        split_seed: seed of that hold-out.
        mean: mean grey level of the training set on the 0..1 scale.
        std: its standard deviation.
    """

    def __init__(
        self,
        data_dir: str = "data/fer2013",
        cache_dir: str | None = None,
        classes: Sequence[str] | None = None,
        augment: str | Mapping[str, Any] | None = "light",
        batch_size: int = 64,
        num_workers: int = 2,
        on_bad_row: str = "error",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        mean: float = FER2013_MEAN,
        std: float = FER2013_STD,
    ):
        super().__init__()
        self.data_dir, self.cache_dir = str(data_dir), cache_dir
        self.class_names = self._check_classes(classes)
        self.augment = resolve_augment(augment)
        self.train_augment = build_augment(**self.augment)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.on_bad_row, self.val_fraction, self.split_seed = on_bad_row, val_fraction, split_seed
        #: Everything inference needs to turn a face crop into network input; saved in checkpoints.
        self.preprocess = {"image_size": IMAGE_SIZE, "grayscale": True, "mean": mean, "std": std}
        self.datasets: dict[str, FaceDataset] = {}

    @staticmethod
    def _check_classes(classes: Sequence[str] | None) -> list[str]:
        if classes is None:
            return list(FER2013_CLASSES)
        names = [str(c).lower() for c in classes]
        unknown = [c for c in names if c not in FER2013_CLASSES]
        if unknown or len(set(names)) != len(names) or len(names) < 2:
            raise EmoError(
                f"data.classes={list(classes)} is not valid: give two or more distinct names "
                f"from {', '.join(FER2013_CLASSES)}"
            )
        return names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_arrays(self) -> FerArrays:
        return load_fer2013(self.data_dir, self.cache_dir, self.on_bad_row)

    def prepare_data(self) -> None:
        self.load_arrays()  # decodes and caches once, in one process

    def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Images and remapped labels per split (train/val/test), class subset applied."""
        fer = self.load_arrays()
        split = fer.split.copy()
        if not fer.official_val:
            holdout = stratified_holdout(fer.labels[split == TRAIN], self.val_fraction, self.split_seed)
            train_idx = np.flatnonzero(split == TRAIN)
            split[train_idx[holdout]] = VAL
            log.info(
                "validation = seeded stratified %.0f%% hold-out of train (seed %d): no official split",
                100 * self.val_fraction,
                self.split_seed,
            )
        # Old label -> new label; -1 drops the row.
        remap = np.full(len(FER2013_CLASSES), -1, dtype=np.int64)
        for new, name in enumerate(self.class_names):
            remap[FER2013_CLASSES.index(name)] = new
        labels = remap[fer.labels]
        out = {}
        for code, name in zip((TRAIN, VAL, TEST), SPLIT_NAMES):
            keep = (split == code) & (labels >= 0)
            out[name] = (fer.images[keep], labels[keep])
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        arrays = self.split_arrays()
        for name, (x, y) in arrays.items():
            aug = self.train_augment if name == "train" else None
            self.datasets[name] = FaceDataset(x, y, self.preprocess, aug)
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.datasets.items())
        log.info("FER-2013 %s: %s; classes %s", self.data_dir, sizes, ", ".join(self.class_names))
        if len(self.datasets["train"]) == 0:
            raise EmoError(f"{self.data_dir}: the training split is empty for classes {self.class_names}")

    def class_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.datasets[split].labels.numpy(), minlength=self.num_classes)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
