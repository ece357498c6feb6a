"""Reading FER-2013 layouts, the cache, bad rows, class subsets and splits."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tarfile

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emo.cli import compose
from emo.data import FER2013_CLASSES, FER2013DataModule, load_fer2013
from emo.data import fer2013 as fer
from emo.errors import EmoError
from emo.paths import CONF_DIR
from tests.helpers import PER_CLASS, real_data_or_skip, write_csv

SPLIT_OF_USAGE = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}


def _sorted_by_split(a: fer.FerArrays):
    """Arrays in a layout-independent order: by split, then by the images' bytes."""
    keys = [bytes([s]) + img.tobytes() for s, img in zip(a.split, a.images)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return a.images[order], a.labels[order], a.split[order]


@pytest.fixture
def layouts(tmp_path, fer_dir, fer_rows):
    """The same synthetic set as csv, csv.gz, tar.gz and prefixed image folders."""
    csv_path = fer_dir / "fer2013.csv"
    out = {"csv": fer_dir}
    (tmp_path / "gz").mkdir()
    with open(csv_path, "rb") as src, gzip.open(tmp_path / "gz" / "fer2013.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    out["gz"] = tmp_path / "gz"
    (tmp_path / "tar").mkdir()
    with tarfile.open(tmp_path / "tar" / "fer2013.tar.gz", "w:gz") as tar:
        tar.add(csv_path, arcname="fer2013/fer2013.csv")
    out["tar"] = tmp_path / "tar"
    for i, (label, img, usage) in enumerate(fer_rows):
        top = "train" if usage == "Training" else "test"
        d = tmp_path / "folders" / top / FER2013_CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{usage}_{i:05d}.png"), img)  # PNG: lossless
    out["folders"] = tmp_path / "folders"
    return out


def test_all_layouts_parse_to_identical_arrays(layouts, fer_rows):
    arrays = {name: load_fer2013(path) for name, path in layouts.items()}
    ref = arrays["csv"]
    assert len(ref) == len(fer_rows)
    assert ref.images.shape == (len(fer_rows), 48, 48) and ref.images.dtype == np.uint8
    np.testing.assert_array_equal(ref.labels, [r[0] for r in fer_rows])  # CSV keeps row order
    np.testing.assert_array_equal(ref.split, [SPLIT_OF_USAGE[r[2]] for r in fer_rows])
    for name in ("gz", "tar"):  # same file, same order
        for field in ("images", "labels", "split"):
            np.testing.assert_array_equal(getattr(arrays[name], field), getattr(ref, field), err_msg=name)
    # folders have their own file order: compare as sorted sets of (split, image, label)
    for a, b in zip(_sorted_by_split(arrays["folders"]), _sorted_by_split(ref)):
        np.testing.assert_array_equal(a, b)
    assert all(a.official_val for a in arrays.values())


def test_folders_without_prefixes_hold_out_stratified_val(tmp_path, fer_rows, caplog):
    for i, (label, img, usage) in enumerate(fer_rows):
        if usage == "PublicTest":
            continue
        d = tmp_path / ("train" if usage == "Training" else "test") / FER2013_CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"im{i}.png"), img)
    with caplog.at_level(logging.INFO):
        dm = FER2013DataModule(data_dir=str(tmp_path), val_fraction=0.25, split_seed=3, num_workers=0)
        dm.setup()
    assert "hold-out" in caplog.text
    n_train = PER_CLASS["Training"]
    assert list(dm.class_counts("val")) == [round(0.25 * n_train)] * 7  # stratified
    assert list(dm.class_counts("train")) == [n_train - round(0.25 * n_train)] * 7
    assert len(dm.datasets["test"]) == 7 * PER_CLASS["PrivateTest"]
    again = FER2013DataModule(data_dir=str(tmp_path), val_fraction=0.25, split_seed=3, num_workers=0)
    again.setup()
    np.testing.assert_array_equal(again.datasets["val"].images, dm.datasets["val"].images)


def test_cache_is_reused_and_rebuilt_when_source_changes(tmp_path, fer_rows, monkeypatch):
    src = write_csv(tmp_path / "fer2013.csv", fer_rows)
    first = load_fer2013(tmp_path, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def no_decode(*a, **k):
        raise AssertionError("decoded again although the source did not change")

    monkeypatch.setattr(fer, "_decode", no_decode)
    again = load_fer2013(tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, first.images)
    monkeypatch.undo()

    write_csv(src, fer_rows[:10])
    os.utime(src, ns=(1, 1))  # a different mtime, whatever the clock resolution
    changed = load_fer2013(tmp_path, cache_dir=tmp_path / "cache")
    assert len(changed) == 10


BAD_ROWS = {
    "wrong pixel count": ("3", " ".join(["1"] * 2300), "Training", "expected 2304 pixel values, got 2300"),
    "non-numeric pixels": ("3", " ".join(["1"] * 2303 + ["x7"]), "Training", "'x7' is not an integer"),
    "pixel out of range": ("3", " ".join(["1"] * 2303 + ["300"]), "Training", "0..255"),
    "label outside 0..6": ("9", " ".join(["1"] * 2304), "Training", "emotion '9'"),
    "unknown Usage": ("3", " ".join(["1"] * 2304), "Validation", "Usage 'Validation'"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_row_error_names_file_and_line(tmp_path, fer_rows, case):
    path = write_csv(tmp_path / "fer2013.csv", fer_rows[:5])
    with open(path, "a") as f:
        f.write(",".join(f'"{v}"' for v in BAD_ROWS[case][:3]) + "\n")
    with pytest.raises(EmoError) as err:
        load_fer2013(tmp_path, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{path}, line 7" in msg  # header + 5 rows + the bad one
    assert BAD_ROWS[case][3] in msg
    assert "data.on_bad_row=skip" in msg


def test_bad_rows_skipped_and_counted(tmp_path, fer_rows, caplog):
    path = write_csv(tmp_path / "fer2013.csv", fer_rows[:5])
    with open(path, "a") as f:
        for label, pixels, usage, _ in BAD_ROWS.values():
            f.write(f'{label},"{pixels}",{usage}\n')
    with caplog.at_level(logging.WARNING):
        arrays = load_fer2013(tmp_path, cache_dir=tmp_path / "cache", on_bad_row="skip")
    assert len(arrays) == 5
    assert f"skipped {len(BAD_ROWS)} malformed row(s)" in caplog.text


def test_missing_data_error_names_what_and_where(tmp_path):
    with pytest.raises(EmoError) as err:
        load_fer2013(tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("fer2013.csv", "fer2013.csv.gz", "fer2013.tar.gz", "nowhere", "kaggle"):
        assert part in msg


def test_wrong_header_and_unreadable_image(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "fer2013.csv").write_text("label,image\n1,2\n")
    with pytest.raises(EmoError, match="expected emotion,pixels,Usage"):
        load_fer2013(tmp_path / "a")
    bad = tmp_path / "b" / "train" / "happy" / "Training_1.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a png")
    with pytest.raises(EmoError, match="Training_1.png: not a readable image"):
        load_fer2013(tmp_path / "b")


def test_class_subset_remaps_labels_and_drops_rows(fer_dir):
    keep = ["angry", "happy", "sad", "surprise", "neutral"]
    dm = FER2013DataModule(data_dir=str(fer_dir), classes=keep, num_workers=0)
    dm.setup()
    assert dm.num_classes == 5 and dm.class_names == keep
    assert list(dm.class_counts("train")) == [PER_CLASS["Training"]] * 5
    # the image of each new label is the one FER-2013 gave its class (the patch position)
    full = load_fer2013(fer_dir)
    for new, name in enumerate(keep):
        img = dm.datasets["train"].images[dm.datasets["train"].labels.numpy() == new][0]
        old = FER2013_CLASSES.index(name)
        assert any(np.array_equal(img, x) for x in full.images[full.labels == old])


def test_unknown_class_name_is_one_line_error(fer_dir):
    with pytest.raises(EmoError, match="two or more distinct names from angry, disgust"):
        FER2013DataModule(data_dir=str(fer_dir), classes=["angry", "contempt"])


def test_loaders_give_normalised_batches(fer_dir):
    dm = FER2013DataModule(
        data_dir=str(fer_dir), augment=compose(["augment=strong"]).data.augment, batch_size=16, num_workers=0
    )
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 48, 48) and y.shape == (16,)
    assert x.dtype.is_floating_point and x.abs().max() < 1 / dm.preprocess.std + 1e-6
    xv, _ = next(iter(dm.val_dataloader()))
    raw = dm.split_arrays()["val"][0][0]  # (48, 48) uint8
    ref = (raw / 255.0 - dm.preprocess.mean) / dm.preprocess.std
    np.testing.assert_allclose(xv[0, 0].numpy(), ref, atol=1e-5)  # no augmentation on val


def test_scoring_needs_no_albumentations(fer_dir, monkeypatch):
    """A lent GPU machine lacks albumentations: data without per-image steps must not import it."""
    import sys

    from emo.data import build_augment

    monkeypatch.setitem(sys.modules, "albumentations", None)  # `import albumentations` now fails
    dm = FER2013DataModule(data_dir=str(fer_dir), augment=None, device_augment=False, num_workers=0)
    dm.setup()
    assert dm.train_augment is None and len(dm.datasets["val"]) > 0
    assert build_augment(mixup=0.2, cutmix=1.0) is None  # batch-level only
    with pytest.raises(ImportError):
        build_augment(hflip=0.5)


@pytest.mark.slow
def test_real_fer2013_split_sizes_and_class_counts():
    data_dir = real_data_or_skip()
    cfg = OmegaConf.load(CONF_DIR / "data" / "fer2013.yaml")
    cfg.data_dir, cfg.num_workers = str(data_dir), 0
    dm = instantiate(cfg)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 28709, "val": 3589, "test": 3589}
    assert list(dm.class_counts("train")) == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert list(dm.class_counts("val")) == [467, 56, 496, 895, 653, 415, 607]
    assert list(dm.class_counts("test")) == [491, 55, 528, 879, 594, 416, 626]
    train = dm.datasets["train"].images / 255.0  # the mean/std the data config states
    assert abs(train.mean() - dm.preprocess.mean) < 1e-3
    assert abs(train.std() - dm.preprocess.std) < 1e-3
    assert (dm.preprocess.mean, dm.preprocess.std) == (fer.FER2013_MEAN, fer.FER2013_STD)


def test_compact_copy_keeps_the_chosen_splits_exactly(fer_dir, tmp_path):
    from emo.data.compact import main as compact_main
    from emo.data.fer2013 import COMPACT_NAME

    full = load_fer2013(fer_dir)
    compact_main([str(tmp_path), "--data-dir", str(fer_dir), "--splits", "train", "val"])
    assert not (tmp_path / "fer2013new.csv").exists()  # no votes beside the data, none written
    small = load_fer2013(tmp_path)  # found as the layout of its folder
    keep = full.split != 2
    np.testing.assert_array_equal(small.images, full.images[keep])
    np.testing.assert_array_equal(small.labels, full.labels[keep])
    np.testing.assert_array_equal(small.split, full.split[keep])
    assert small.official_val and small.source.endswith(COMPACT_NAME)
    dm = FER2013DataModule(data_dir=str(tmp_path), augment=None)
    dm.setup()
    assert len(dm.datasets["test"]) == 0 and len(dm.datasets["train"]) == (full.split == 0).sum()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / COMPACT_NAME).write_bytes(b"not xz")
    with pytest.raises(EmoError, match="not a readable compact FER-2013 copy"):
        load_fer2013(tmp_path / "bad")


def test_compact_copy_keeps_the_votes_of_its_rows(ferplus_dir, tmp_path):
    """The FER+ votes travel with the compact copy: agreement with people is scored from it."""
    from emo.data.compact import main as compact_main

    compact_main([str(tmp_path), "--data-dir", str(ferplus_dir), "--splits", "train", "val"])
    full = FER2013DataModule(data_dir=str(ferplus_dir), augment=None)
    small = FER2013DataModule(data_dir=str(tmp_path), augment=None)
    full.setup()
    small.setup()
    for split in ("train", "val"):
        np.testing.assert_array_equal(small.people[split], full.people[split])
    assert len(small.people["val"]) > 0 and len(small.datasets["test"]) == 0
