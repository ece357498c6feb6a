"""FER-2013 as a LightningDataModule: official splits, class subsets, augmentation presets."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emo.data.batch_augment import BatchAugment, BatchMix
from emo.data.fer2013 import (
    FER2013_CLASSES,
    FER2013_MEAN,
    FER2013_STD,
    IMAGE_SIZE,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    USAGE_TO_SPLIT,
    VAL,
    FerArrays,
    load_fer2013,
)
from emo.data.ferplus import (
    FERPLUS_CLASSES,
    FERPLUS_NAME,
    check_aligned,
    ferplus_majority,
    ferplus_probabilities,
    find_ferplus,
    load_ferplus,
    mix_targets,
    people_labels,
)
from emo.data.resumable import ResumableLoader, ResumableShuffle
from emo.data.soft_targets import fingerprint
from emo.data.transforms import (
    Preprocess,
    build_augment,
    normalize_faces,
    preprocess_faces,
    resolve_augment,
)
from emo.errors import EmoError

log = logging.getLogger(__name__)

#: The FER-2013 ``Usage`` value and the role of each split, for the messages that name them.
SPLIT_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
SPLIT_ROLE = {"train": "training", "val": "validation", "test": "test"}
#: The splits each Lightning stage needs (``None``: a plain ``setup()``, which needs train).
STAGE_SPLITS = {None: ("train",), "fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class FaceDataset(Dataset):
    """(N, 48, 48) uint8 faces and labels; optional albumentations pipeline, then normalisation.

    Items are ``(face, target, *extras)``: the target is the label unless ``targets`` (soft
    targets, (N, C)) replaces it; ``extras`` are further per-face tensors (e.g. a teacher's
    probabilities, or FER+ people labels). ``labels`` always holds the hard labels.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        preprocess: Preprocess,
        augment=None,
        targets: torch.Tensor | None = None,
        extras: Sequence[torch.Tensor] = (),
    ):
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        self.preprocess, self.augment = Preprocess.of(preprocess), augment
        self.targets, self.extras = (self.labels if targets is None else targets), list(extras)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        img = self.images[i]
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        face = preprocess_faces(img, self.preprocess)[0]  # (1, 48, 48)
        return (face, self.targets[i], *(e[i] for e in self.extras))


class TensorFaces(Dataset):
    """Faces already stacked in one tensor, fetched a whole batch at a time (no per-image work).

    Holds uint8 (N, 1, 48, 48) training faces for on-device augmentation, or normalised float
    faces for evaluation; ``to(device)`` makes them resident on the GPU.

    Items are ``(face, target, *extras)`` as in :class:`FaceDataset`.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor | None = None,
        extras: Sequence[torch.Tensor] = (),
    ):
        self.images, self.labels = images, labels
        self.targets, self.extras = (labels if targets is None else targets), list(extras)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return (self.images[i], self.targets[i], *(e[i] for e in self.extras))

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, ...]:
        i = torch.as_tensor(idx, device=self.images.device)
        j = i.to(self.labels.device)
        return (self.images[i], self.targets[j], *(e[j] for e in self.extras))

    def to(self, device: torch.device) -> TensorFaces:
        self.images = self.images.to(device)
        return self


def _whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch  # TensorFaces.__getitems__ already stacked it


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
        augment: the flags of an augmentation preset (``AugmentFlags``' fields; Hydra's augment
            group fills them from ``conf/augment``); ``None``: no augmentation.
        device_augment: augment whole batches on the training device (``BatchAugment``; data
            resident on the GPU when there is one) instead of per image in DataLoader workers.
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        on_bad_row: ``error`` or ``skip`` malformed rows.
        val_fraction: hold-out size when the layout has no official validation split.
        split_seed: seed of that hold-out.
        mean: mean grey level of the training set on the 0..1 scale.
        std: its standard deviation.
        ferplus_file: FER+ votes (``fer2013new.csv``); ``None`` looks beside the data. When found,
            validation and test batches carry each face's people label (``emo.data.ferplus``)
            as a third item, for the agreement-with-people metric.
        ferplus_mix: beta; train on (1 - beta) * one-hot(FER-2013 label) + beta * FER+ votes over
            the classes (soft targets). 0 trains on the FER-2013 labels alone.
        labels: ``fer2013`` (the single labels, seven classes) or ``ferplus`` (eight classes with
            contempt, from the FER+ votes by the FER+ protocol; validation and test always use
            the majority label).
        ferplus_target: with ``labels=ferplus``, train on the ``majority`` label or on the vote
            ``probability`` distribution (soft targets).
    """

    def __init__(
        self,
        data_dir: str = "data/fer2013",
        cache_dir: str | None = None,
        classes: Sequence[str] | None = None,
        augment: Mapping[str, Any] | None = None,
        device_augment: bool = False,
        batch_size: int = 64,
        num_workers: int = 2,
        on_bad_row: str = "error",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        mean: float = FER2013_MEAN,
        std: float = FER2013_STD,
        ferplus_file: str | None = None,
        ferplus_mix: float = 0.0,
        labels: str = "fer2013",
        ferplus_target: str = "majority",
    ):
        super().__init__()
        if labels not in ("fer2013", "ferplus"):
            raise EmoError(f"data.labels={labels!r} is not valid: use fer2013 or ferplus")
        if ferplus_target not in ("majority", "probability"):
            raise EmoError(
                f"data.ferplus_target={ferplus_target!r} is not valid: use majority or probability"
            )
        if labels == "ferplus" and ferplus_mix:
            raise EmoError(
                "data.ferplus_mix blends FER-2013 labels with votes: use it with data.labels=fer2013"
            )
        self.labels, self.ferplus_target = labels, ferplus_target
        self.data_dir, self.cache_dir = str(data_dir), cache_dir
        self.vocabulary = FERPLUS_CLASSES if labels == "ferplus" else FER2013_CLASSES
        self.class_names = self._check_classes(classes, self.vocabulary)
        self.augment = resolve_augment(augment)
        self.device_augment = device_augment
        # Per-image albumentations in workers, or the same flags applied to batches on the device.
        self.train_augment = None if device_augment else build_augment(**self.augment)
        self.batch_augment = BatchAugment(**self.augment) if device_augment else None
        self.batch_mix = BatchMix(
            len(self.class_names),
            mixup=self.augment.get("mixup", 0.0),
            cutmix=self.augment.get("cutmix", 0.0),
            p=self.augment.get("mix_p", 1.0),
        )
        self.batch_size, self.num_workers = batch_size, num_workers
        self.on_bad_row, self.val_fraction, self.split_seed = on_bad_row, val_fraction, split_seed
        #: Everything inference needs to turn a face crop into network input; saved in checkpoints.
        self.preprocess = Preprocess(IMAGE_SIZE, float(mean), float(std))
        self.ferplus_file, self.ferplus_mix = ferplus_file, float(ferplus_mix)
        if not 0.0 <= self.ferplus_mix <= 1.0:
            raise EmoError(f"data.ferplus_mix={ferplus_mix} is not valid: give a weight between 0 and 1")
        self.datasets: dict[str, FaceDataset | TensorFaces] = {}
        #: Per split, each face's people label (FER+ majority; -1: none of the classes), when found.
        self.people: dict[str, np.ndarray] = {}

    @staticmethod
    def _check_classes(
        classes: Sequence[str] | None, vocabulary: Sequence[str] = FER2013_CLASSES
    ) -> list[str]:
        if classes is None:
            return list(vocabulary)
        names = [str(c).lower() for c in classes]
        unknown = [c for c in names if c not in vocabulary]
        if unknown or len(set(names)) != len(names) or len(names) < 2:
            raise EmoError(
                f"data.classes={list(classes)} is not valid: give two or more distinct names "
                f"from {', '.join(vocabulary)}"
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
        #: Where the faces came from and how many rows each split had before any was dropped.
        self.source, self.official_val = fer.source, fer.official_val
        self.source_rows = dict(zip(SPLIT_NAMES, np.bincount(fer.split, minlength=3).tolist()))
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
        votes = self.load_votes(fer)
        # Labels in the vocabulary's order (-1: dropped), then old label -> new label.
        base = fer.labels if self.labels == "fer2013" else ferplus_majority(votes, self.vocabulary)
        remap = np.full(len(self.vocabulary) + 1, -1, dtype=np.int64)  # the extra slot maps -1 to -1
        for new, name in enumerate(self.class_names):
            remap[self.vocabulary.index(name)] = new
        labels = remap[base]
        if self.labels == "ferplus" and self.ferplus_target == "probability":
            # Training keeps every face whose (denoised) votes favour one of the classes.
            soft = ferplus_probabilities(votes, self.class_names)
            top = people_labels(np.where(np.asarray(votes) <= 1, 0, votes), self.class_names)
            labels = np.where(split == TRAIN, np.where(soft.sum(1) > 0, top, -1), labels)
        out, self._votes = {}, {}
        for code, name in zip((TRAIN, VAL, TEST), SPLIT_NAMES):
            keep = (split == code) & (labels >= 0)
            out[name] = (fer.images[keep], labels[keep])
            if votes is not None:
                self._votes[name] = votes[keep]
                self.people[name] = people_labels(votes[keep], self.class_names)
        return out

    def load_votes(self, fer: FerArrays) -> np.ndarray | None:
        """FER+ votes row-aligned with ``fer`` (``None`` where the file is absent and not needed)."""
        path = self.ferplus_file or find_ferplus(self.data_dir)
        needed = self.ferplus_mix > 0 or self.labels == "ferplus"
        if path is None or not fer.official_val:
            if needed:
                why = (
                    "data.labels=ferplus"
                    if self.labels == "ferplus"
                    else f"data.ferplus_mix={self.ferplus_mix}"
                )
                raise EmoError(
                    f"{why} needs FER+ votes ({FERPLUS_NAME}) beside the FER-2013 CSV in "
                    f"{self.data_dir}, or data.ferplus_file=PATH"
                )
            return None
        try:
            ferplus = load_ferplus(path)
            check_aligned(ferplus, fer.split, USAGE_TO_SPLIT)
        except EmoError as err:
            if needed:
                raise
            log.warning("no agreement-with-people metric: %s", err)
            return None
        return ferplus.votes

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self._build_datasets()
        self.check_splits(*STAGE_SPLITS.get(stage, ()))

    def check_splits(self, *names: str) -> None:
        """Fail in one line when one of the splits ``names`` (train, val, test) holds no faces, naming
        the split and the fix: before any training, not as an ``IndexError`` after it."""
        if not self.datasets:
            self._build_datasets()
        for name in names:
            if len(self.datasets[name]) == 0:
                raise EmoError(self._empty_split_message(name))

    def _empty_split_message(self, name: str) -> str:
        usage, role = SPLIT_USAGE[name], SPLIT_ROLE[name]
        if self.source_rows[name]:  # rows there were, but none of the chosen classes
            return (
                f"{self.source}: the {usage} faces ({role} split) hold none of the classes "
                f"{', '.join(self.class_names)} ({self.labels} labels): choose data.classes it has"
            )
        found = ", ".join(f"{SPLIT_USAGE[k]} {n:,}" for k, n in self.source_rows.items() if n) or "none"
        why = f"{self.source}: no {usage} faces, so no {role} split (found {found})"
        if Path(self.source).is_dir():  # the image-folder layout
            if name == "val":  # only file names with the official prefixes get here
                return (
                    f"{why}: name some images {usage}_N.png, or drop the Training_/PrivateTest_ "
                    "prefixes to hold out data.val_fraction of train/ for validation"
                )
            named = f" ({usage}_N.png)" if self.official_val else ""
            return f"{why}: put {usage} images{named} in {'train' if name == 'train' else 'test'}/<class>/"
        if self.source.endswith(".npz.xz"):  # emo's compact copy, possibly of some splits only
            return f"{why}: write the copy again with it (python -m emo.data.compact OUT --splits {name} ...)"
        fix = f"{why}: the Usage column must mark rows Training, PublicTest and PrivateTest"
        return fix + (" (without one: test=false to train, split=val to evaluate)" if name == "test" else "")

    def _build_datasets(self) -> None:
        arrays = self.split_arrays()
        for name, (x, y) in arrays.items():
            labels = torch.as_tensor(y, dtype=torch.long)
            if name != "train":  # normalised once; batches are slices
                extras = [torch.from_numpy(self.people[name])] if name in self.people else []
                self.datasets[name] = TensorFaces(preprocess_faces(x, self.preprocess), labels, extras=extras)
                continue
            #: What stored soft targets must have been made for (``emo.data.soft_targets``).
            self.train_fingerprint = fingerprint(x, y)
            targets = None
            if self.labels == "ferplus" and self.ferplus_target == "probability":
                targets = torch.from_numpy(ferplus_probabilities(self._votes[name], self.class_names))
                log.info("training targets: FER+ vote distributions over %d classes", self.num_classes)
            if self.ferplus_mix > 0:
                mixed = mix_targets(y, self._votes[name], self.class_names, self.ferplus_mix)
                targets = torch.from_numpy(mixed)  # (N, C)
                log.info(
                    "training targets: %.2f x FER-2013 label + %.2f x FER+ votes",
                    1 - self.ferplus_mix,
                    self.ferplus_mix,
                )
            if self.device_augment:  # uint8; BatchAugment + normalisation after the transfer
                self.datasets[name] = TensorFaces(torch.from_numpy(x).unsqueeze(1), labels, targets)
            else:
                self.datasets[name] = FaceDataset(x, y, self.preprocess, self.train_augment, targets)
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.datasets.items())
        log.info(
            "FER-2013 %s: %s; classes %s (%s labels)",
            self.data_dir,
            sizes,
            ", ".join(self.class_names),
            self.labels,
        )

    def class_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.datasets[split].labels.numpy(), minlength=self.num_classes)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup()
        ds = self.datasets[split]
        # Shuffled (training) batches come from a loader whose place in the epoch checkpoints keep.
        loader_class, sampler = (ResumableLoader, ResumableShuffle(ds)) if shuffle else (DataLoader, None)
        if isinstance(ds, TensorFaces):  # slicing a tensor needs no worker processes
            if self.trainer is not None and split == "train":
                ds.to(self.trainer.strategy.root_device)  # resident on the GPU
            loader = loader_class(ds, batch_size=self.batch_size, sampler=sampler, collate_fn=_whole_batch)
        else:
            loader = loader_class(
                ds,
                batch_size=self.batch_size,
                sampler=sampler,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                drop_last=False,
            )
        if shuffle:
            loader.batches_done = self._batches_trained
        return loader

    def _batches_trained(self) -> int:
        """Training batches of the epoch in progress already trained on (0 between epochs): what a
        checkpoint saved now must skip when it is resumed."""
        trainer = self.trainer
        if trainer is None:
            return 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return done if done < trainer.num_training_batches else 0

    def add_train_targets(self, targets: torch.Tensor) -> None:
        """Give every training face one more per-face target (e.g. a teacher's probabilities (N, C)),
        delivered as the next item of each training batch and mixed along with the labels."""
        self.setup()
        train = self.datasets["train"]
        if len(targets) != len(train):
            raise EmoError(f"{len(targets)} extra targets for {len(train)} training faces")
        train.extras.append(targets)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y, *extras = batch
        training = self.trainer is not None and self.trainer.training
        if x.dtype == torch.uint8:  # device_augment's training batches
            x = x.float().div_(255.0)
            if training:
                x = self.batch_augment(x)
            x = normalize_faces(x, self.preprocess)
        if training:
            x, y, *extras = self.batch_mix(x, y, *extras)
        return (x, y, *extras)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
