"""Train a classifier, then test its best checkpoint on PrivateTest.

Examples::

    python -m emo.train model=cnn3 data.augment=strong
    python -m emo.train -m optimizer.lr=1e-3,3e-4
    python -m emo.train hparams_search=optuna
    python -m emo.train trainer=ddp trainer.devices=4
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from emo.cli import (
    check_values,
    instantiate,
    instantiate_dict,
    resolve_precision,
    resume_command,
    run_hydra_cli,
)
from emo.errors import EmoError, exit_on_emo_error
from emo.models.checkpoint import read_checkpoint
from emo.models.stopping import StopOnSignal, TrainingStopped
from emo.paths import CONF_DIR
from emo.report.metrics import print_metrics, summarize, write_metrics

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The run's Trainer with its callbacks and loggers (``trainer.precision=auto`` resolved).
    Without a logger (``~logger``) the learning-rate monitor, which only feeds loggers, is left out.
    SIGTERM and SIGINT stop it at a step boundary with a checkpoint to resume from (``StopOnSignal``)."""
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if not loggers:
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    callbacks.append(StopOnSignal(last, resume_command(cfg.paths.output_dir, last)))
    return instantiate(
        cfg.trainer,
        precision=resolve_precision(cfg.trainer.get("precision", "32-true")),
        callbacks=callbacks,
        logger=loggers or False,
    )


def monitored_checkpoint(trainer: L.Trainer, monitor: str) -> ModelCheckpoint | None:
    """The ``ModelCheckpoint`` that keeps the best epoch by ``monitor`` (whatever the order of the
    callbacks); ``None`` when there is none."""
    return next((cb for cb in trainer.checkpoint_callbacks if cb.monitor == monitor), None)


def fit(
    trainer: L.Trainer, model: L.LightningModule, datamodule, ckpt_path: str | None
) -> TrainingStopped | None:
    """``trainer.fit``; how a signal stopped it (``None``: it ran to its end)."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except TrainingStopped as stopped:
        return stopped
    except SIGTERMException:  # Lightning's own stop, before StopOnSignal took the signal over
        return TrainingStopped.at("SIGTERM", trainer)
    finally:
        log.info("fit ended after epoch %d (step %d)", trainer.current_epoch, trainer.global_step)
    return None


def train(cfg: DictConfig) -> dict:
    """Fit ``cfg.model`` on ``cfg.data``; test the best checkpoint; return the final metrics.

    Writes ``metrics.json`` into ``cfg.paths.output_dir``: the best checkpoint and its validation
    score, and the test split's metrics when ``cfg.test``. Stopped by a signal, it writes what was
    measured with ``interrupted`` (where, and the command that resumes) and raises
    :class:`TrainingStopped`.
    """
    check_values(cfg)
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise EmoError(f"ckpt_path {cfg.ckpt_path} does not exist: give a run's checkpoints/last.ckpt")
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.check_splits(*(["train", "val"] if cfg.train else []), *(["test"] if cfg.test else []))
    model = instantiate(
        cfg.model,
        class_names=datamodule.class_names,
        preprocess=datamodule.preprocess,
        labels=datamodule.labels,
    )
    if cfg.get("init_from"):
        model.init_weights_from(cfg.init_from)
    trainer = build_trainer(cfg)
    stopped = fit(trainer, model, datamodule, cfg.get("ckpt_path")) if cfg.train else None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = monitored_checkpoint(trainer, cfg.monitor)
    if ckpt is not None and ckpt.best_model_score is not None:
        metrics[f"{cfg.monitor}_best"] = float(ckpt.best_model_score)

    best = (ckpt.best_model_path if ckpt else "") or (None if cfg.train else cfg.get("ckpt_path"))
    summary = None
    if cfg.test and not stopped:  # a signal during the last epoch's end: no test either
        stopped = TrainingStopped.untested(trainer, best)
    if cfg.test and not stopped:
        if not best:
            log.warning("no best checkpoint (fast_dev_run or no validation): testing current weights")
        if best:
            # Load the weights ourselves: with EMA, Lightning's ckpt_path= would restore the raw
            # (not the averaged) weights that the checkpoint also carries.
            model.load_state_dict(read_checkpoint(best)["state_dict"])
        try:
            tested = trainer.test(model, datamodule=datamodule)[0]
        except SIGTERMException:  # Lightning's stop: training is done, the test is left to do
            stopped = TrainingStopped.untested(trainer, best, "SIGTERM")
        else:
            metrics.update(tested)
            summary = summarize(tested, model.class_names, "test")
    if trainer.is_global_zero:  # under DDP every process gets here with the same (synced) numbers
        run = {"split": "test", "tta": "none", "labels": datamodule.labels} if summary else {}
        write_metrics(
            Path(cfg.paths.output_dir) / "metrics.json",
            summary,
            **run,
            checkpoint=best,
            # The validation score that chose the checkpoint (what sweeps compare configs by).
            best={cfg.monitor: metrics.get(f"{cfg.monitor}_best")},
            epochs=trainer.current_epoch,
            # Stopped by a signal: where, how to resume, and the last values logged until then.
            **({"interrupted": stopped.record, "last": metrics} if stopped else {}),
        )
        if summary:
            print_metrics(summary, f"PrivateTest (test split), no TTA - {best or 'current weights'}")
    if stopped:
        raise stopped
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@exit_on_emo_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # What sweepers optimise (hparams_search=optuna maximises it): the best validation score of
    # the checkpoint callback; under fast_dev_run, which keeps none, the module's own
    # <monitor>_best.
    return metrics.get(f"{cfg.monitor}_best")


def cli() -> None:
    """Console entry point (``emo-train``, ``python -m emo.train``)."""
    run_hydra_cli(main)


if __name__ == "__main__":
    cli()
