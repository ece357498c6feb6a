"""Learning-rate schedules that torch does not ship as a single class."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    max_epochs: int,
    warmup_epochs: int = 3,
    warmup_start: float = 0.1,
    eta_min: float = 1e-6,
) -> SequentialLR:
    """Linear warm-up from ``warmup_start`` x lr over ``warmup_epochs``, then cosine decay to
    ``eta_min`` at ``max_epochs`` (stepped once per epoch)."""
    warmup_epochs = max(1, min(warmup_epochs, max_epochs - 1))
    return SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, start_factor=warmup_start, total_iters=warmup_epochs),
            CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - warmup_epochs), eta_min=eta_min),
        ],
        milestones=[warmup_epochs],
    )
