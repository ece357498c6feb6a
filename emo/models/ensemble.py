"""Several trained classifiers as one: their mean probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from emo.errors import EmoError


class Ensemble(L.LightningModule):
    """Several trained classifiers for the same classes and input; predicts their mean probabilities.

    Built by :func:`load_ensemble` from checkpoint files, or by :func:`load_checkpoint` from an
    ensemble file. It answers what callers read of an :class:`EmoModule`: ``class_names``,
    ``preprocess``, ``labels``, ``predict_proba(x, tta)``, ``predict_tta``, and ``hparams`` with
    ``arch`` (``ensemble(vgg_s, vgg_s, cnn3)``) and ``members`` (the members' architectures).
    """

    def __init__(self, members: Sequence[L.LightningModule]):
        super().__init__()
        if not members:
            raise EmoError("an ensemble needs at least one member")
        first = members[0]
        self.members = torch.nn.ModuleList(members)
        self.class_names, self.preprocess, self.labels = first.class_names, first.preprocess, first.labels
        archs = [str(m.hparams.arch) for m in members]
        self.save_hyperparameters(
            {
                "arch": f"ensemble({', '.join(archs)})",
                "members": archs,
                "class_names": list(first.class_names),
                "preprocess": first.preprocess.as_dict(),
                "labels": first.labels,
            },
            logger=False,
        )
        self.predict_tta = "none"

    def use_channels_last(self) -> None:
        for m in self.members:
            m.use_channels_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log mean probabilities (B, C): logits whose softmax is the ensemble's prediction (what
        a distillation teacher's output or ``model(x).softmax(-1)`` is read as)."""
        return torch.stack([m(x).float().softmax(-1) for m in self.members]).mean(0).log()

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """The members' mean :meth:`EmoModule.predict_proba` (B, C), each with TTA ``tta``."""
        return torch.stack([m.predict_proba(x, tta) for m in self.members]).mean(0)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.predict_proba(x, self.predict_tta)


def check_ensemble_members(members: Sequence[L.LightningModule], names: Sequence[str]) -> None:
    """Raise unless every member predicts the first's classes from the first's preprocessing.

    Raises:
        EmoError: one line naming the first member (of ``names``) that differs.
    """
    for name, m in zip(names[1:], members[1:]):
        if m.class_names != members[0].class_names or m.preprocess != members[0].preprocess:
            raise EmoError(
                f"{name} predicts {m.class_names} from {m.preprocess}, unlike {names[0]}: "
                "ensemble checkpoints trained on the same classes and preprocessing"
            )
