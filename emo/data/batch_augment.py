"""Augmentation of whole batches on the training device (GPU, or the CPU's main process).

Per-image albumentations in DataLoader workers cannot keep a GPU busy, and on a 2-core CPU the
workers compete with the training step for the cores. ``BatchAugment`` draws the same kinds of
random changes as the albumentations presets (same flags, see ``emo.data.transforms``), but with
independent parameters per image and in a handful of tensor ops: one ``grid_sample`` for
flip + rotation + zoom + shift, then brightness/contrast and random erasing by masks.
(torchvision's v2 transforms draw one set of parameters per call, i.e. per batch.)

The camera steps (perspective, crop jitter, lighting, blur, noise, JPEG) work on the images
that draw them only: a ``grid_sample`` each for the two warps, a field, a grouped separable
convolution, added noise; JPEG goes through OpenCV's codec per image on the CPU (the codec
``A.ImageCompression`` uses: the same bytes). A step whose flag is 0 draws no random numbers,
so the presets without camera steps give the same batches for the same seed as before them.

``BatchMix`` is batch-level MixUp/CutMix from torchvision; it turns labels into soft targets.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from emo.data.transforms import (
    BLUR_SIGMA,
    CROP_SHIFT,
    CROP_ZOOM,
    JPEG_QUALITY,
    LIGHTING,
    NOISE_STD,
    AugmentFlags,
)


class BatchAugment(nn.Module):
    """Random flip/affine/brightness-contrast/erasing and the camera steps of a (B, 1, H, W) float
    batch in 0..1.

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

    @staticmethod
    def _grid(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 3) maps from output to input coordinates (grid_sample's, homogeneous) -> grid."""
        n, _, h, w = x.shape
        xs = (torch.arange(w, device=x.device, dtype=theta.dtype) * 2 + 1) / w - 1  # pixel centres
        ys = (torch.arange(h, device=x.device, dtype=theta.dtype) * 2 + 1) / h - 1
        ones = torch.ones(h, w, device=x.device, dtype=theta.dtype)
        base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), ones], -1)
        pts = torch.einsum("nij,hwj->nhwi", theta, base)
        return (pts[..., :2] / pts[..., 2:]).to(x.dtype)

    @staticmethod
    def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = BatchAugment._grid(theta, x)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _perspective(self, x: torch.Tensor) -> torch.Tensor:
        """Each output corner comes from that corner moved by up to ``perspective_scale`` of the side
        in x and y: the homography through the four pairs."""
        b, s = x.shape[0], self.flags.perspective_scale
        on = self._bernoulli(b, self.flags.perspective, x)
        move = self._uniform(b * 8, -s, s, x).view(b, 4, 2)[on].double() * 2  # side = 2
        n = len(move)
        if n == 0:
            return x
        dst = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
        dst = dst.to(x.device).expand(n, 4, 2)  # output corners
        src = dst + move  # where they come from
        # h11 u + h12 v + h13 - h31 u X - h32 v X = X, likewise for Y (h33 = 1).
        u, v, one, zero = (
            dst[..., 0],
            dst[..., 1],
            torch.ones_like(dst[..., 0]),
            torch.zeros_like(dst[..., 0]),
        )
        sx, sy = src[..., 0], src[..., 1]
        rows_x = torch.stack([u, v, one, zero, zero, zero, -u * sx, -v * sx], -1)
        rows_y = torch.stack([zero, zero, zero, u, v, one, -u * sy, -v * sy], -1)
        a = torch.cat([rows_x, rows_y], 1)  # (n, 8, 8)
        h = torch.linalg.solve(a, torch.cat([sx, sy], 1))
        theta = torch.cat([h, torch.ones(n, 1, dtype=h.dtype, device=h.device)], 1).view(n, 3, 3)
        out = x.clone()
        out[on] = self._warp(x[on], theta.to(torch.float32))
        return out

    def _crop_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """A detector box off by a shift and zoom, as ``_geometry`` draws them (no flip, no rotation)."""
        b = x.shape[0]
        on = self._bernoulli(b, self.flags.crop_jitter, x)
        zoom = 1 + self._uniform(b, -CROP_ZOOM, CROP_ZOOM, x)
        tx, ty = (self._uniform(b, -CROP_SHIFT, CROP_SHIFT, x) * 2 for _ in range(2))
        zoom, tx, ty = zoom[on], tx[on], ty[on]
        if len(zoom) == 0:
            return x
        theta = torch.zeros(len(zoom), 3, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
        theta[:, 0, 2], theta[:, 1, 2], theta[:, 2, 2] = tx, ty, 1
        out = x.clone()
        out[on] = self._warp(x[on], theta)
        return out

    def _lighting(self, x: torch.Tensor) -> torch.Tensor:
        """Times ``1 + a * d``: ``d`` the distance from the centre along a random direction, in half
        sides (grid_sample's coordinates of the pixel centres), ``a`` uniform in ``LIGHTING``."""
        b, _, h, w = x.shape
        on = self._bernoulli(b, self.flags.lighting, x).float()
        a = self._uniform(b, *LIGHTING, x) * on
        angle = self._uniform(b, 0, 2 * math.pi, x)
        xs = ((torch.arange(w, device=x.device) * 2 + 1) / w - 1).view(1, 1, 1, w)
        ys = ((torch.arange(h, device=x.device) * 2 + 1) / h - 1).view(1, 1, h, 1)
        field = 1 + a.view(b, 1, 1, 1) * (
            xs * angle.cos().view(b, 1, 1, 1) + ys * angle.sin().view(b, 1, 1, 1)
        )
        return (x * field).clamp_(0, 1)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur, sigma uniform in ``BLUR_SIGMA``: one grouped separable convolution over the
        images that draw it, mirrored at the border (cv2's default, ``BORDER_REFLECT_101``)."""
        b, c, h, w = x.shape
        on = self._bernoulli(b, self.flags.blur, x)
        sigma = self._uniform(b, *BLUR_SIGMA, x)[on]
        n = len(sigma)
        if n == 0:
            return x
        r = int(BLUR_SIGMA[1] * 3.5)  # the widest kernel albumentations makes: 2 * int(3.5 sigma) + 1
        taps = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
        k = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, 2r + 1)
        y = x[on].reshape(1, n * c, h, w)
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
        out = x.clone()
        out[on] = y.view(n, c, h, w)
        return out

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        on = self._bernoulli(b, self.flags.noise, x).float()
        std = (self._uniform(b, *NOISE_STD, x) * on).view(b, 1, 1, 1)
        return (x + torch.randn_like(x) * std).clamp_(0, 1)

    def _jpeg(self, x: torch.Tensor) -> torch.Tensor:
        """JPEG re-compression, quality uniform in ``JPEG_QUALITY`` (inclusive), through OpenCV on the
        CPU, one image at a time (the only per-image loop here: ~0.1 ms per 48x48 face)."""
        b = x.shape[0]
        on = self._bernoulli(b, self.flags.jpeg, x)
        quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (b,), device=x.device)
        idx = on.nonzero().flatten()
        if len(idx) == 0:
            return x
        faces = x[idx].mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()  # (n, C, H, W)
        for face, q in zip(faces, quality[idx].tolist(), strict=True):
            for plane in face:  # one grey image per channel
                ok, code = cv2.imencode(".jpg", plane, (cv2.IMWRITE_JPEG_QUALITY, int(q)))
                plane[...] = cv2.imdecode(code, cv2.IMREAD_GRAYSCALE)
        out = x.clone()
        out[idx] = torch.from_numpy(faces).to(x.device, x.dtype).div_(255)
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.flags
        if f.geometry:
            x = self._geometry(x)
        # The camera steps draw nothing when off, and come after the older steps' draws or between
        # them only when on: a preset without them consumes the random stream as before them.
        if f.perspective > 0:
            x = self._perspective(x)
        if f.crop_jitter > 0:
            x = self._crop_jitter(x)
        if f.lighting > 0:
            x = self._lighting(x)
        if f.brightness_contrast > 0:
            x = self._brightness_contrast(x)
        if f.erasing > 0:
            x = self._erase(x)
        if f.blur > 0:
            x = self._blur(x)
        if f.noise > 0:
            x = self._noise(x)
        if f.jpeg > 0:
            x = self._jpeg(x)
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
