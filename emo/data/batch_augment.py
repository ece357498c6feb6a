"""Augmentation of whole batches on the training device (GPU, or the CPU's main process).

Per-image albumentations in DataLoader workers cannot keep a GPU busy, and on a 2-core CPU the
workers compete with the training step for the cores. ``BatchAugment`` draws the same kinds of
random changes as the albumentations presets (same flags, see ``emo.data.transforms``), but with
independent parameters per image and in a handful of tensor ops: one ``grid_sample`` for
flip + rotation + zoom + shift, then brightness/contrast and random erasing by masks.
(torchvision's v2 transforms draw one set of parameters per call, i.e. per batch.)

``BatchMix`` is batch-level MixUp/CutMix from torchvision; it turns labels into soft targets.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from emo.data.transforms import AugmentFlags


class BatchAugment(nn.Module):
    """Random flip/affine/brightness-contrast/erasing of a (B, 1, H, W) float batch in 0..1.

    Takes ``emo.data.transforms.AugmentFlags``, as ``build_augment`` does; the mix flags are
    accepted and ignored (``BatchMix`` applies them).
    """

    def __init__(self, **flags: Any):
        super().__init__()
        self.flags = AugmentFlags(**flags)

    @staticmethod
    def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(n, device=like.device, dtype=torch.float32).uniform_(lo, hi)

    def _bernoulli(self, n: int, p: float, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(n, device=like.device) < p

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        flip = torch.where(self._bernoulli(b, self.flags.hflip, x), -1.0, 1.0)
        on = self._bernoulli(b, self.flags.affine_p, x).float()
        angle = self._uniform(b, -self.flags.rotate, self.flags.rotate, x) * on * math.pi / 180
        zoom = 1 + self._uniform(b, -self.flags.scale, self.flags.scale, x) * on
        # Shifts in grid_sample's normalised coordinates, where the side spans 2.
        tx, ty = (self._uniform(b, -self.flags.shift, self.flags.shift, x) * 2 * on for _ in range(2))
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )  # (B, 2, 3): output pixel -> input pixel; the flip mirrors x before rotating
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        # Reflection, not black corners: FER faces fill the frame (as the albumentations preset).
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _brightness_contrast(self, x: torch.Tensor) -> torch.Tensor:
        b, lim = x.shape[0], self.flags.brightness_contrast
        on = self._bernoulli(b, 0.5, x).float()
        alpha = (1 + self._uniform(b, -lim, lim, x) * on).view(b, 1, 1, 1)
        beta = (self._uniform(b, -lim, lim, x) * on).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * alpha + mean + beta).clamp_(0, 1)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        area = self._uniform(b, 0.02, 0.2, x) * h * w
        ratio = torch.exp(self._uniform(b, math.log(0.3), math.log(3.3), x))
        eh = (area * ratio).sqrt().clamp(1, h).floor()
        ew = (area / ratio).sqrt().clamp(1, w).floor()
        top = (torch.rand(b, device=x.device) * (h - eh + 1)).floor()
        left = (torch.rand(b, device=x.device) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        box = (
            (rows >= top.view(b, 1, 1))
            & (rows < (top + eh).view(b, 1, 1))
            & (cols >= left.view(b, 1, 1))
            & (cols < (left + ew).view(b, 1, 1))
        )  # (B, H, W)
        box &= self._bernoulli(b, self.flags.erasing, x).view(b, 1, 1)
        return x.masked_fill(box.unsqueeze(1), 0.0)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flags.geometry:
            x = self._geometry(x)
        if self.flags.brightness_contrast > 0:
            x = self._brightness_contrast(x)
        if self.flags.erasing > 0:
            x = self._erase(x)
        return x


class BatchMix(nn.Module):
    """With probability ``p`` per batch, MixUp (alpha ``mixup``) or CutMix (alpha ``cutmix``).

    Returns soft targets (B, C) whenever it is active, the targets unchanged otherwise. Further
    per-face targets (e.g. a teacher's probabilities (B, C)) are mixed with the same weights.
    """

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, p: float = 1.0):
        super().__init__()
        self.num_classes, self.p = num_classes, p
        self.kinds = [(kind, a) for kind, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a > 0]

    def forward(self, x: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.kinds or torch.rand(()) >= self.p:
            return (x, *targets)
        kind, alpha = self.kinds[int(torch.randint(len(self.kinds), ()))]
        # Mix the faces as if each were its own class (labels 0..B-1): the soft "labels" that come
        # back are the (B, B) mixing weights, which then mix every target, hard or soft, alike.
        b = len(x)
        x, weights = kind(alpha=alpha, num_classes=b)(x, torch.arange(b, device=x.device))
        out = []
        for t in targets:
            t = F.one_hot(t, self.num_classes) if t.ndim == 1 else t
            out.append(weights @ t.to(weights.dtype))
        return (x, *out)
