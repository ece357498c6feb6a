"""Stopping a training run on SIGTERM or SIGINT: a checkpoint to resume from, then one line.

SLURM, Kubernetes and ``timeout`` send SIGTERM some seconds before they kill a job; Ctrl-C sends
SIGINT. Left to Lightning, a SIGTERM ends the fit with exit status 0 and nothing saved, and a
Ctrl-C loses the epoch in progress. :class:`StopOnSignal` takes both signals while the model
trains: at the next training step boundary it saves the run's whole state (the weights, the
optimizer, the schedule, callbacks such as EMA and the place in the epoch, which the training
loader keeps: ``emo.data.resumable``) to ``checkpoints/last.ckpt`` and raises
:class:`TrainingStopped`, whose message is the command that resumes the run. A second Ctrl-C
stops at once (Lightning's own handling: the epoch in progress is lost).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from emo.errors import EmoError

log = logging.getLogger(__name__)

#: The signals that stop training cleanly.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a user would type it: relative to the current folder when inside it."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


class TrainingStopped(EmoError):
    """A run stopped by a signal. ``record`` says where (``signal``, ``epoch``, ``step``) and how to
    go on (``checkpoint``, ``resume``), for ``metrics.json``; the message says the same in one line."""

    def __init__(self, message: str, **record: Any):
        super().__init__(message)
        self.record = record

    @classmethod
    def at(
        cls, signal_name: str, trainer: L.Trainer, checkpoint: str | None = None, resume: str | None = None
    ) -> TrainingStopped:
        """Stopped while training: resumable with ``resume`` when ``checkpoint`` was saved."""
        epoch, step = trainer.current_epoch, trainer.global_step
        where = f"training stopped by {signal_name} at epoch {epoch}, step {step}"
        message = f"{where}: resume with {resume}" if resume else f"{where}, with nothing saved: run it again"
        return cls(message, signal=signal_name, epoch=epoch, step=step, checkpoint=checkpoint, resume=resume)

    @classmethod
    def untested(
        cls, trainer: L.Trainer, best: str | None, signal_name: str | None = None
    ) -> TrainingStopped | None:
        """Stopped after training, before or while testing (``signal_name``, or the one
        ``StopOnSignal`` took during the last epoch's end; ``None``: no signal came). Training is
        done: what is left is to test ``best``."""
        stopper = next((cb for cb in trainer.callbacks if isinstance(cb, StopOnSignal)), None)
        signal_name = signal_name or (stopper.received if stopper else None)
        if not signal_name:
            return None
        epoch, step = trainer.current_epoch, trainer.global_step
        where = f"training ended (epoch {epoch}, step {step}) but {signal_name} stopped it before its test"
        test = f"python -m emo.evaluate ckpt_path={shown_path(best)}" if best else None
        return cls(
            f"{where}: test it with {test}" if test else where,
            signal=signal_name,
            epoch=epoch,
            step=step,
            checkpoint=best,
            test=test,
        )


class StopOnSignal(Callback):
    """Stop training cleanly on SIGTERM or SIGINT (see the module's docstring).

    Args:
        ckpt_path: where the checkpoint goes (the run's ``checkpoints/last.ckpt``, which it
            replaces: it is the newer state).
        resume: the command that resumes the run from ``ckpt_path``, for the message.

    The signal is acted on at the end of a training step. One that arrives during an epoch's last
    step or its validation lets the epoch end (validation, its checkpoints, its learning-rate step:
    a run resumed from that last step would skip them) and stops after the next epoch's first
    step; one that arrives during the last epoch's end leaves training finished and ``received``
    set, and ``emo.train`` does not go on to test (:meth:`TrainingStopped.untested`). A signal
    ignored when training starts (SIGINT in a background job) stays ignored.
    """

    def __init__(self, ckpt_path: str | os.PathLike, resume: str | None = None):
        self.ckpt_path = Path(ckpt_path)
        self.resume = resume or f"python -m emo.train ... ckpt_path={shown_path(self.ckpt_path)}"
        #: The name of the signal received (``None``: none yet).
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    # ---------------------------------------------------------------------------- the handlers
    def _install(self) -> None:
        """Take the stop signals (from the main thread only, where Python runs handlers)."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN:
                continue
            self._previous[sig] = current
            signal.signal(sig, self._handle)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.received and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            self._restore()
            raise KeyboardInterrupt
        if not self.received:
            self.received = name
            again = (
                " (Ctrl-C again to stop at once, losing the epoch in progress)" if name == "SIGINT" else ""
            )
            log.warning("%s: saving a checkpoint at the next step, then stopping%s", name, again)

    # ------------------------------------------------------------------------------ the stop
    def _requested(self, trainer: L.Trainer) -> bool:
        """Whether to stop now: on every process when any received the signal (DDP stops together)."""
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            self.received = self.received or ("a signal to another process" if stop else None)
        return stop

    def _stop(self, trainer: L.Trainer) -> None:
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole state, to resume from
        if trainer.is_global_zero:
            os.replace(tmp, self.ckpt_path)  # atomic: a kill during the write keeps the older file
        trainer.strategy.barrier("StopOnSignal")
        if not trainer.is_global_zero:
            raise SystemExit(1)  # under DDP the other processes stop too, and leave the line to rank 0
        raise TrainingStopped.at(self.received, trainer, str(self.ckpt_path), self.resume)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # after Lightning's own SIGTERM handler, which it replaces during fit

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if not self._requested(trainer):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's end first (see the class's docstring)
        if 0 <= trainer.max_steps <= trainer.global_step:
            return  # training ends here anyway
        self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._requested(trainer)  # under DDP, every process learns of a signal any one received
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
