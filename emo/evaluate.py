"""Evaluate a checkpoint on one split and write a report.

    python -m emo.evaluate ckpt_path=PATH [split=test|val] [tta=none|flip|tencrop] [hydra.run.dir=DIR]
    python -m emo.evaluate 'ckpt_path=[A.ckpt,B.ckpt,C.ckpt]'    # an ensemble: mean probabilities
    python -m emo.evaluate ckpt_path=PATH labels=ferplus    # score on the other labels (FER+ majority)

Writes into the run directory: metrics.json, classification_report.txt, confusion_matrix.png,
roc.png and, when the training run's TensorBoard logs are found, curves.png.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from emo.cli import check_values, instantiate, run_hydra_cli
from emo.data.fer2013 import FER2013_CLASSES
from emo.data.ferplus import FERPLUS_CLASSES
from emo.data.transforms import normalize_faces, preprocess_faces
from emo.errors import EmoError, exit_on_emo_error
from emo.inference.preprocess import check_tta
from emo.models.module import load_checkpoint, load_ensemble
from emo.paths import CONF_DIR
from emo.report.metrics import (
    StageMetrics,
    classification_report,
    confusion_figure,
    print_metrics,
    summarize,
    write_metrics,
)
from emo.report.plots import plot_curves, plot_roc

log = logging.getLogger(__name__)
SPLITS = {"test": "PrivateTest", "val": "PublicTest", "train": "Training"}
LABEL_VOCABULARIES = {"fer2013": FER2013_CLASSES, "ferplus": FERPLUS_CLASSES}


def align_probs(probs: torch.Tensor, model_classes, classes) -> torch.Tensor:
    """``probs`` (N, len(model_classes)) as (N, len(classes)), matched by class name: a class the
    model lacks gets 0 (a seven-class model never predicts FER+'s contempt, so those faces count
    as errors), a model class outside ``classes`` is dropped and each row renormalised."""
    if list(model_classes) == list(classes):
        return probs
    out = torch.zeros(len(probs), len(classes), dtype=probs.dtype)
    for j, name in enumerate(classes):
        if name in model_classes:
            out[:, j] = probs[:, list(model_classes).index(name)]
    total = out.sum(1, keepdim=True)
    return torch.where(total > 0, out / total.clamp_min(1e-12), out)


def split_faces(datamodule, split: str) -> torch.Tensor:
    """Every face of ``split``, in order, as the network's input (N, 1, S, S)."""
    datamodule.setup()
    ds = datamodule.datasets[split]
    faces = ds.images if split != "train" or ds.images.dtype != torch.uint8 else None
    if faces is None:  # the training split held as uint8 for batched augmentation
        faces = normalize_faces(ds.images.float().div(255.0), datamodule.preprocess)
    if not torch.is_tensor(faces):  # per-image datasets hold numpy uint8 (N, 48, 48)
        faces = preprocess_faces(faces, datamodule.preprocess)
    return faces


def split_probs(model, datamodule, split: str, tta: str = "none", batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (N, C) of ``model`` for every face of ``split``, in order, in chunks
    (memory stays bounded whatever the TTA)."""
    faces = split_faces(datamodule, split)
    device = next(model.parameters()).device  # faces go to the model, probabilities come back
    out = [
        model.predict_proba(faces[i : i + batch_size].to(device), tta).float().cpu()
        for i in range(0, len(faces), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, len(model.class_names))


def evaluate(cfg: DictConfig) -> dict:
    """Score ``cfg.ckpt_path`` on ``cfg.split``; write the report into ``cfg.paths.output_dir``."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise EmoError(
            "give the checkpoint to score: emo evaluate ckpt_path=RUN/checkpoints/best-....ckpt "
            "(a training run's), or ckpt_path=emo/weights/vgg_s.ckpt (a bundled model's, in a source checkout)"
        )
    check_values(cfg)
    if cfg.split not in SPLITS:
        raise EmoError(f"split={cfg.split!r} is not valid: use test (PrivateTest) or val (PublicTest)")
    check_tta(cfg.tta)
    paths = list(cfg.ckpt_path) if isinstance(cfg.ckpt_path, ListConfig) else [cfg.ckpt_path]
    model = load_ensemble(paths) if len(paths) > 1 else load_checkpoint(paths[0])
    model.predict_tta = cfg.tta
    # The checkpoint, not the config, says which classes and which preprocessing the net expects.
    pre = model.preprocess
    # fer2013 or ferplus: the labels it learnt, unless told to score it on the other ones.
    label_source = cfg.get("labels") or model.labels
    if label_source not in LABEL_VOCABULARIES:
        raise EmoError(f"labels={label_source!r} is not valid: use fer2013 or ferplus (or leave it out)")
    classes = model.class_names if label_source == model.labels else list(LABEL_VOCABULARIES[label_source])
    datamodule = instantiate(
        cfg.data,
        classes=classes,
        augment=None,
        mean=pre.mean,
        std=pre.std,
        labels=label_source,
    )
    datamodule.check_splits(cfg.split)  # an empty split fails here, in one line naming it
    loader = getattr(datamodule, f"{cfg.split}_dataloader")()
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False)
    probs = torch.cat(trainer.predict(model, dataloaders=loader)).float().cpu()  # (N, C)
    probs = align_probs(probs, model.class_names, classes)
    labels = datamodule.datasets[cfg.split].labels
    people = datamodule.people.get(cfg.split)  # FER+ votes found beside the data
    metrics = StageMetrics(len(classes))
    metrics.update(probs, labels, None if people is None else torch.from_numpy(people))
    summary = summarize(metrics.compute(cfg.split, classes), classes, cfg.split)
    cm = metrics.confusion_matrix()
    out = Path(cfg.paths.output_dir)
    run = {
        "split": cfg.split,
        "tta": cfg.tta,
        "labels": label_source,
        "model_labels": model.labels,
        "checkpoint": paths[0] if len(paths) == 1 else paths,
    }
    write_metrics(out / "metrics.json", summary, **run)
    (out / "classification_report.txt").write_text(classification_report(summary))
    title = f"{SPLITS[cfg.split]} ({cfg.split}), TTA {cfg.tta}"
    if cfg.get("plots", True):
        confusion_figure(cm, classes, title).savefig(out / "confusion_matrix.png", dpi=120)
        plot_roc(probs, labels, classes, title).savefig(out / "roc.png", dpi=120)
        run_dir = Path(paths[0]).resolve().parent.parent  # <run>/checkpoints/x.ckpt
        curves = plot_curves(run_dir)
        if curves is not None:
            curves.savefig(out / "curves.png", dpi=120)
        else:
            log.info("no TensorBoard logs next to the checkpoint (%s): skipped curves.png", run_dir)
    print_metrics(summary, f"{title} - {', '.join(map(str, paths))}")
    log.info("report written to %s", out)
    return {**summary, **run}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
@exit_on_emo_error
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["accuracy"]


def cli() -> None:
    """Console entry point (``emo-evaluate``, ``python -m emo.evaluate``)."""
    run_hydra_cli(main)


if __name__ == "__main__":
    cli()
