"""The training system: loss, metrics and optimisation around a network from the registry.

The checkpoint's hyper-parameters are plain data (``save_hyperparameters``: architecture name,
class names, preprocessing, ...), so ``load_checkpoint(path)``, which is
``EmoModule.load_from_checkpoint`` with one-line errors, rebuilds a working classifier without
Hydra. A bundled ensemble file (``python -m emo.weights A.ckpt B.ckpt NAME``) holds several such
checkpoints; ``load_checkpoint`` returns it as an :class:`Ensemble`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms.v2.functional import ten_crop

import emo
from emo.data.fer2013 import FER2013_CLASSES
from emo.data.soft_targets import SoftTargetsMismatch, load_soft_targets
from emo.errors import EmoError
from emo.inference.preprocess import TENCROP_FRACTION, Preprocess, check_tta
from emo.models import create_model
from emo.models.checkpoint import is_ensemble_file, read_checkpoint
from emo.models.ensemble import Ensemble, check_ensemble_members
from emo.models.int8 import dequantize_checkpoint
from emo.report.metrics import StageMetrics, confusion_figure

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """Containers (Hydra's included) as dicts and lists: checkpoints hold plain data only, so
    ``torch.load(weights_only=True)`` reads them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


class EmoModule(L.LightningModule):
    """Facial-expression classifier.

    Args:
        arch: registered network name (``emo.models.list_models()``).
        class_names: output classes in label order; their count sets the head size.
        preprocess: how a grey face crop becomes network input (a :class:`Preprocess`, or the
            dict a checkpoint stores; ``None``: FER-2013's).
        net_kwargs: extra arguments of the network factory (e.g. dropout).
        optimizer: ``params -> Optimizer`` (a Hydra partial); ``None`` for inference.
        scheduler: ``optimizer -> LRScheduler`` (a Hydra partial) or ``None``.
        label_smoothing: cross-entropy label smoothing.
        class_weights: ``None``, ``"balanced"`` (inverse training frequency) or one weight per class.
        monitor: the run's ``monitor``: what a plateau scheduler watches and what
            ``<monitor>_best`` tracks (``val/acc``, ``val/f1``, ``val/agree`` or ``val/agree_ok``).
        channels_last: NHWC memory layout (faster convolutions with bf16 on GPUs and recent CPUs).
        compile: ``torch.compile`` the network for training (GPU; the checkpoint is unchanged).
        distill_from: teacher checkpoints (same classes); their averaged softened probabilities
            on each training batch become extra targets (knowledge distillation, Hinton 2015).
        distill_alpha: weight of the distillation term (1 - alpha weighs the label loss); ``None``
            means 0.5 when there is a teacher. A distillation experiment sets it, so fitting
            with neither ``distill_from`` nor ``distill_targets`` then fails in one line.
        distill_temperature: softmax temperature of teachers and student in that term. Stored
            probabilities ``p`` (``distill_targets``) are softened as ``p ** (1 / T)``,
            renormalised: exactly the teacher's softmax at temperature T for one teacher, and for
            an ensemble's mean probabilities the softmax of its log-mean at temperature T.
        distill_targets: a soft-target file (``python -m emo.distill targets``) holding the
            teachers' probabilities for every training face, or the name of one the package
            ships (``vgg_s``); used like ``distill_from`` at the cost of plain training (no
            teacher forward passes). Give one of the two, not both.
        distill_optional: when the ``distill_targets`` file was made for other classes or
            another training set (``data.classes`` subsets, FER+ labels, your own data), train on
            the labels alone and say so in the log, instead of failing. ``model=cnn3`` sets it, so
            that its default distillation never stands in the way of a different data set.
        labels: which labels the classes were trained on: ``fer2013`` or ``ferplus`` (FER+ votes);
            evaluation reads the same ones.
        agree_min_acc: when validation faces carry FER+ people labels, ``val/agree_ok`` is the
            agreement with people while ``val/acc`` is at least this, and agreement - 1 below it:
            ``monitor=val/agree_ok`` selects the epoch that agrees with people best among those
            that keep this FER-2013 accuracy (the rule for the default model).
        val_tta: the test-time augmentation validation scores with (``none``, ``flip``,
            ``tencrop``), and so what the monitored metric and the best checkpoint are chosen on:
            set it to the TTA the model will run with (flip: two more forward passes over
            PublicTest per epoch, as ``predict_proba`` scores every view, the plain one
            included). The validation loss stays the plain forward pass's.
    """

    def __init__(
        self,
        arch: str = "cnn3",
        class_names: Sequence[str] = FER2013_CLASSES,
        preprocess: Preprocess | Mapping[str, Any] | None = None,
        net_kwargs: Mapping[str, Any] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        label_smoothing: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        monitor: str = "val/acc",
        channels_last: bool = False,
        compile: bool = False,
        distill_from: Sequence[str] | None = None,
        distill_alpha: float | None = None,
        distill_temperature: float = 2.0,
        distill_targets: str | None = None,
        distill_optional: bool = False,
        agree_min_acc: float = 0.70,
        labels: str = "fer2013",
        val_tta: str = "none",
    ):
        super().__init__()
        # Plain data before save_hyperparameters, which saves these arguments as they now are.
        class_names = [str(c) for c in class_names]
        net_kwargs = _plain(net_kwargs or {})
        preprocess = Preprocess.of(preprocess).as_dict()
        class_weights = _plain(class_weights)
        distill_from = [str(p) for p in distill_from or []]
        distill_targets = str(distill_targets) if distill_targets else None
        # The optimizer and scheduler are training code (Hydra partials), not data.
        check_tta(val_tta)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names, self.preprocess, self.labels = class_names, Preprocess.of(preprocess), labels
        self.net = create_model(arch, in_chans=1, num_classes=len(class_names), **net_kwargs)
        self.optimizer_factory, self.scheduler_factory, self.monitor = optimizer, scheduler, monitor
        self.channels_last, self.compile_net = channels_last, compile
        self.distill_from, self.distill_targets = distill_from, distill_targets
        self.distill_alpha, self.distill_temperature = distill_alpha, distill_temperature
        if self.distill_from and self.distill_targets:
            raise EmoError(
                "give model.distill_from (teacher checkpoints) or model.distill_targets (their stored "
                f"probabilities), not both (distill_targets is {distill_targets}: "
                "add model.distill_targets=null to distil from the checkpoints)"
            )
        # Loaded for fit only, and kept out of state_dict so checkpoints stay the student's.
        self._teachers: list[EmoModule] = []
        if channels_last:
            self.use_channels_last()
        self.register_buffer("class_weight", None, persistent=False)
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise EmoError(f"model.class_weights={class_weights!r}: use null, balanced or a list")
        if class_weights is not None and not isinstance(class_weights, str):
            if len(class_weights) != len(class_names):
                raise EmoError(
                    f"model.class_weights has {len(class_weights)} values for {len(class_names)} classes"
                )
            self.class_weight = torch.tensor(list(class_weights), dtype=torch.float32)

        c = len(class_names)
        self.train_acc = MulticlassAccuracy(c, average="micro")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        # Accuracy, per-class precision/recall/F1, macro-F1, the confusion matrix and agreement
        # with people: the vocabulary of metrics.json (emo.report.metrics).
        self.val_metrics, self.test_metrics = StageMetrics(c), StageMetrics(c)
        #: The best epoch's value of ``monitor``, logged as ``<monitor>_best``.
        self.monitor_best = MaxMetric()
        #: Test-time augmentation used by ``predict_step`` (``trainer.predict``).
        self.predict_tta = "none"

    def use_channels_last(self) -> None:
        """Run the network, and convert its input, in NHWC layout from now on."""
        self.channels_last = True
        self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)  # (B, 1, 48, 48) -> (B, C) logits

    def init_weights_from(self, path: str | Path) -> None:
        """Copy the network weights of another emo checkpoint (fine-tuning; not a resume).

        The same network for other classes (e.g. FER+'s eight) gives everything but the
        classifier, which starts afresh.
        """
        src = load_checkpoint(path)
        if src.hparams.arch != self.hparams.arch:
            raise EmoError(
                f"init_from={path} holds {src.hparams.arch}; this run trains {self.hparams.arch}: "
                "give weights of the same network"
            )
        if src.hparams.net_kwargs != self.hparams.net_kwargs:
            own = self.net.state_dict()
            if any(own[k].shape != v.shape for k, v in src.net.state_dict().items() if k in own):
                raise EmoError(
                    f"init_from={path} holds a {src.hparams.arch} built with net_kwargs="
                    f"{src.hparams.net_kwargs}; this run's are {self.hparams.net_kwargs}: "
                    "give the same ones (model.net_kwargs.KEY=VALUE)"
                )
        if src.class_names == self.class_names:
            self.net.load_state_dict(src.net.state_dict())
            log.info("initialised %s from %s", self.hparams.arch, path)
            return
        own = self.net.state_dict()
        shared = {k: v for k, v in src.net.state_dict().items() if k in own and own[k].shape == v.shape}
        self.net.load_state_dict(shared, strict=False)
        fresh = sorted(set(own) - set(shared))
        log.info(
            "initialised %s from %s (classes %s -> %s): all but %s",
            self.hparams.arch,
            path,
            len(src.class_names),
            len(self.class_names),
            ", ".join(fresh),
        )

    # ---------------------------------------------------------------------------------- fit
    def setup(self, stage: str) -> None:
        if self.compile_net and stage == "fit":
            self.net.compile()  # in place: parameter names, hence checkpoints, stay the same
        if (
            stage == "fit"
            and self.distill_alpha is not None
            and not (self.distill_from or self.distill_targets)
        ):
            raise EmoError(
                "distillation needs teachers: give model.distill_from=[A.ckpt,...] or "
                "model.distill_targets=PATH (python -m emo.distill)"
            )
        if self.distill_from and stage == "fit" and not self._teachers:
            self._teachers = [load_checkpoint(p) for p in self.distill_from]
            for path, t in zip(self.distill_from, self._teachers):
                if t.class_names != self.class_names:
                    raise EmoError(f"teacher {path} predicts {t.class_names}, not {self.class_names}")
                t.requires_grad_(False)
            log.info("distilling from %d teacher(s): %s", len(self._teachers), ", ".join(self.distill_from))
        if self.distill_targets and stage == "fit":
            dm = self.trainer.datamodule
            dm.setup("fit")
            try:
                probs = load_soft_targets(
                    self.distill_targets, self.class_names, dm.train_fingerprint, len(dm.datasets["train"])
                )
            except SoftTargetsMismatch as err:
                if not self.hparams.distill_optional:
                    raise
                log.warning("%s; training on the labels alone (model.distill_optional=true)", err)
                self.distill_targets = None
            else:
                dm.add_train_targets(probs)
                log.info("distilling from stored soft targets %s", self.distill_targets)
        if self.hparams.class_weights == "balanced" and stage == "fit":
            counts = torch.as_tensor(self.trainer.datamodule.class_counts("train"), dtype=torch.float32)
            self.class_weight = counts.sum() / (len(counts) * counts.clamp(min=1))
            log.info("balanced class weights: %s", [round(w, 3) for w in self.class_weight.tolist()])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["emo_version"] = emo.__version__

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if not {"arch", "class_names"} <= set(checkpoint.get("hyper_parameters") or {}):
            raise ValueError("not an emo checkpoint")  # load_checkpoint says so in one line
        dequantize_checkpoint(checkpoint)  # weights packed as int8 (emo.weights --int8) become float

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, y, weight=self.class_weight, label_smoothing=self.hparams.label_smoothing
        )

    def on_train_start(self) -> None:
        self.monitor_best.reset()  # the sanity check must not count as a best epoch
        for t in self._teachers:
            t.to(self.device).eval()

    def _distill_loss(
        self, logits: torch.Tensor, x: torch.Tensor, stored: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hinton's KL term between the student and the teachers' mean softened distribution."""
        t = self.distill_temperature
        with torch.no_grad():
            if stored is not None:  # (B, C) probabilities: p ** (1/T), renormalised
                target = stored.float().clamp_min(1e-8).log().div(t).softmax(-1)
            else:
                target = torch.stack([m(x).float().div(t).softmax(-1) for m in self._teachers]).mean(0)
        log_p = logits.float().div(t).log_softmax(-1)
        return F.kl_div(log_p, target, reduction="batchmean") * t * t

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # y: labels (B,), or soft targets (B, C) (MixUp/CutMix, FER+ votes); then, when distilling
        # from stored targets, the teachers' probabilities (B, C).
        x, y, *extra = batch
        logits = self(x)
        loss = self._loss(logits, y)
        if self._teachers or self.distill_targets:
            a = 0.5 if self.distill_alpha is None else self.distill_alpha
            loss = (1 - a) * loss + a * self._distill_loss(logits, x, extra[0] if extra else None)
        self.train_loss(loss)
        self.train_acc(logits, y.argmax(-1) if y.ndim == 2 else y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        x, y, *people = batch  # people: FER+ majority labels (B,), when the votes were found
        logits = self(x)
        getattr(self, f"{stage}_loss")(F.cross_entropy(logits, y))
        tta = self.hparams.val_tta if stage == "val" else "none"
        preds = logits if tta == "none" else self.predict_proba(x, tta)
        getattr(self, f"{stage}_metrics").update(preds, y, people[0] if people else None)
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute("val", self.class_names)
        cm = self.val_metrics.confusion_matrix()
        self.val_metrics.reset()
        if self.trainer.sanity_checking:
            return
        if "val/agree" in values:
            acc, agree = values["val/acc"], values["val/agree"]
            values["val/agree_ok"] = agree if acc >= self.hparams.agree_min_acc else agree - 1
        # Values already synced over DDP processes: sync_dist averages equal values (and keeps
        # Lightning from warning that it might not be).
        shown = [k for k in ("val/acc", "val/f1", "val/agree") if k in values]
        self.log_dict({k: values[k] for k in shown}, prog_bar=True, sync_dist=True)
        logged = {f"val/f1_{name}" for name in self.class_names} | {"val/agree_ok"}
        self.log_dict({k: v for k, v in values.items() if k in logged}, sync_dist=True)
        if self.monitor in values:
            self.monitor_best(values[self.monitor])
            self.log(f"{self.monitor}_best", self.monitor_best.compute(), prog_bar=True, sync_dist=True)
        if isinstance(self.logger, TensorBoardLogger):
            fig = confusion_figure(cm, self.class_names, f"val, epoch {self.current_epoch}")
            self.logger.experiment.add_figure("val/confusion_matrix", fig, self.current_epoch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        # Every value metrics.json needs, logged: trainer.test returns them
        # (emo.report.metrics.summarize turns them into the summary).
        self.log_dict(self.test_metrics.compute("test", self.class_names), sync_dist=True)
        self.test_metrics.reset()

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities (B, C) for normalised faces (B, 1, S, S).

        Args:
            tta: ``none``; ``flip`` averages with the mirrored face; ``tencrop`` averages the
                four corner and the centre crops of 44/48 of the side, resized back, and their
                mirror images (10 views).
        """
        check_tta(tta)
        views = tta_views(x, tta)  # (V, B, 1, S, S)
        v, b = views.shape[:2]
        probs = self(views.flatten(0, 1)).float().softmax(-1)
        return probs.view(v, b, -1).mean(0)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.predict_proba(x, self.predict_tta)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise EmoError("no optimizer configured: this module was built for inference only")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }


def tta_views(x: torch.Tensor, tta: str) -> torch.Tensor:
    """The test-time views of a batch (B, 1, S, S) as (V, B, 1, S, S)."""
    if tta == "none":
        return x[None]
    if tta == "flip":
        return torch.stack([x, x.flip(-1)])
    size = x.shape[-1]
    crop = round(size * TENCROP_FRACTION)
    crops = ten_crop(x, [crop, crop])  # 5 crops, then the same 5 of the mirrored face
    return torch.stack(
        [F.interpolate(c, size=(size, size), mode="bilinear", align_corners=False) for c in crops]
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> EmoModule | Ensemble:
    """Rebuild a trained :class:`EmoModule` (in eval mode) from a checkpoint file alone:
    ``EmoModule.load_from_checkpoint``, with a one-line error for a file it cannot use.

    Every emo checkpoint loads: training checkpoints, resumable ``last.ckpt`` files and packed
    (also fp16) weights, whose weights are cast back to float32. Those written before
    ``save_hyperparameters`` lack some arguments (their defaults apply) and store
    ``preprocess.grayscale`` (:meth:`Preprocess.of` drops it). An ensemble file
    (``python -m emo.weights A.ckpt B.ckpt NAME``) loads as an :class:`Ensemble` of its members.

    Raises:
        EmoError: the file is missing, unreadable, not an emo checkpoint, or its weights do not fit
            the network it names.
    """
    path = Path(path)
    if not path.is_file():
        raise EmoError(f"checkpoint {path} not found: give a .ckpt from a run's checkpoints/ or emo/weights/")
    if is_ensemble_file(path):
        return _load_ensemble_file(path, map_location)
    try:
        model = EmoModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except EmoError:
        raise
    except Exception as err:  # torch and Lightning raise many types: say which case this is
        hp = read_checkpoint(path, map_location)["hyper_parameters"]  # raises for foreign files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise EmoError(f"{path}: weights do not fit {hp['arch']} ({first})") from None
    return model.eval()


def _load_ensemble_file(path: Path, map_location: str | torch.device) -> Ensemble:
    ckpt = read_checkpoint(path, map_location)
    members = []
    for i, member in enumerate(ckpt["members"], 1):
        buf = io.BytesIO()  # each member is a packed checkpoint: Lightning's loader rebuilds it
        torch.save(member, buf)
        buf.seek(0)
        try:
            model = EmoModule.load_from_checkpoint(buf, map_location=map_location, weights_only=True)
        except EmoError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            arch = member["hyper_parameters"]["arch"]
            raise EmoError(f"{path}: ensemble member {i}'s weights do not fit {arch} ({first})") from None
        members.append(model.eval())
    check_ensemble_members(members, [f"{path} (member {i})" for i in range(1, len(members) + 1)])
    return Ensemble(members).eval()


def load_ensemble(paths: Sequence[str | Path], map_location: str | torch.device = "cpu") -> Ensemble:
    """An :class:`Ensemble` of checkpoints that share class names and preprocessing.

    Raises:
        EmoError: a file is not a usable checkpoint, or the members disagree on classes or input.
    """
    members = [load_checkpoint(p, map_location) for p in paths]
    check_ensemble_members(members, [str(p) for p in paths])
    return Ensemble(members).eval()
