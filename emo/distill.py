"""Soft targets for teacher-free distillation: a teacher ensemble's probabilities, stored once.

    python -m emo.distill A.ckpt B.ckpt C.ckpt --out targets/ens_abc.pt [--tta flip]
    python -m emo.distill runs/a/train_probs.pt runs/b/train_probs.pt --out ens_ab.pt

Each member is a checkpoint (its probabilities on every Training face are computed, with the
TTA given) or a soft-target file already written for the same training set (averaged as is).
The mean is written as fp16 (~0.4 MB for FER-2013) with the class list and a fingerprint of the
training set; train a student on it with
``python -m emo.train experiment=vgg_s_distill model.distill_targets=ens_abc.pt``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from emo.data import FER2013DataModule
from emo.data.soft_targets import load_soft_targets, read_soft_targets, save_soft_targets
from emo.errors import EmoError, exit_on_emo_error
from emo.evaluate import split_probs
from emo.inference.preprocess import Preprocess, check_tta
from emo.models.module import load_checkpoint

log = logging.getLogger(__name__)


def teacher_targets(
    members: list[str | Path], data_dir: str | Path, tta: str = "flip"
) -> tuple[torch.Tensor, dict]:
    """Mean probabilities (N, C) of ``members`` on every training face, and the file's metadata.

    Raises:
        EmoError: a member is unusable, or members disagree on classes or preprocessing.
    """
    check_tta(tta)
    if not members:
        raise EmoError("give at least one teacher: checkpoints or soft-target files")
    ckpts = [Path(m) for m in members if Path(m).suffix == ".ckpt"]
    models = [load_checkpoint(p) for p in ckpts]
    files = [Path(m) for m in members if Path(m).suffix != ".ckpt"]
    classes = models[0].class_names if models else read_soft_targets(files[0])["class_names"]
    pre = models[0].preprocess if models else None
    for path, m in zip(ckpts, models):
        if m.class_names != classes or m.preprocess != pre:
            raise EmoError(f"{path} predicts {m.class_names} from {m.preprocess}: teachers must share both")
    dm = FER2013DataModule(data_dir=str(data_dir), classes=classes, augment=None, **_norm(pre))
    dm.setup()
    n = len(dm.datasets["train"])
    probs = [load_soft_targets(f, classes, dm.train_fingerprint, n) for f in files]
    for path, m in zip(ckpts, models):
        log.info("teacher %s: %d training faces, TTA %s", path, n, tta)
        probs.append(split_probs(m, dm, "train", tta))
    meta = {"members": [Path(m).name for m in members], "tta": tta}
    return torch.stack(probs).mean(0), {"class_names": classes, "fingerprint": dm.train_fingerprint, **meta}


def _norm(pre: Preprocess | None) -> dict:
    return {"mean": pre.mean, "std": pre.std} if pre else {}


@exit_on_emo_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a teacher ensemble's soft targets for distillation.")
    parser.add_argument("members", nargs="+", help="teacher checkpoints (.ckpt) and/or soft-target files")
    parser.add_argument("--out", required=True, help="where to write the soft targets (.pt)")
    parser.add_argument("--tta", default="flip", help="test-time augmentation of checkpoint teachers")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("EMO_DATA_DIR", "data/fer2013"),
        help="FER-2013 (default: data/fer2013)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    probs, meta = teacher_targets(args.members, args.data_dir, args.tta)
    out = save_soft_targets(args.out, probs, meta.pop("class_names"), meta.pop("fingerprint"), **meta)
    print(f"wrote {out} ({len(probs):,} faces, {out.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
