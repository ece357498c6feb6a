"""VGG-style nets adapted to 48x48 grey faces.

``vgg_fer`` follows Khaireddin & Chen (2021): four stages of two 3x3 convs (64-512 filters),
BatchNorm, max-pooling, then two dense layers. ``vgg_s`` is the
small real-time model: the same four stages at 32-192 filters with global average pooling
instead of dense layers (0.84M parameters). ``vgg_m`` widens only its last stage (2.1M
parameters for 1.4x the multiply-adds): a bigger teacher that still trains on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from emo.models.registry import register_model


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class VGG(nn.Module):
    """Stages of ``depth`` conv-BN-ReLU layers each ending in a 2x2 max-pool.

    Args:
        widths: filters per stage; each stage halves the resolution.
        depth: conv layers per stage (one number, or one per stage).
        hidden: sizes of the dense layers on the flattened features; empty = global average
            pooling straight into the classifier (far fewer parameters).
        dropout: before each dense layer and the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 7,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        depth: int | tuple[int, ...] = 2,
        hidden: tuple[int, ...] = (1024, 1024),
        img_size: int = 48,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        layers, ch = [], in_chans
        depths = (depth,) * len(widths) if isinstance(depth, int) else tuple(depth)
        for w, d in zip(widths, depths):
            for i in range(d):
                layers += conv_bn_relu(ch if i == 0 else w, w)
            layers.append(nn.MaxPool2d(2))
            ch = w
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        if hidden:
            side = img_size // 2 ** len(widths)
            dims = (ch * side * side, *hidden)
            head.append(nn.Flatten())
            for a, b in zip(dims[:-1], dims[1:]):
                head += [nn.Dropout(dropout), nn.Linear(a, b), nn.ReLU(inplace=True)]
            ch = dims[-1]
        else:
            head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        head += [nn.Dropout(dropout), nn.Linear(ch, num_classes)]
        self.head = nn.Sequential(*head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 1, 48, 48) -> (B, widths[-1], 3, 3)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # -> (B, num_classes) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def vgg_fer(**kwargs) -> VGG:
    """Khaireddin & Chen-style VGG (10.5M parameters; 21 MB in fp16)."""
    return VGG(**kwargs)


@register_model
def vgg_s(**kwargs) -> VGG:
    """Small real-time VGG: 32-192 filters, global pooling (0.84M parameters)."""
    kwargs.setdefault("widths", (32, 64, 128, 192))
    kwargs.setdefault("hidden", ())
    return VGG(**kwargs)


@register_model
def vgg_m(**kwargs) -> VGG:
    """vgg_s with a 384-filter last stage, where width is cheap at 6 px (2.06M parameters,
    149M multiply-adds per face against vgg_s's 105M)."""
    kwargs.setdefault("widths", (32, 64, 128, 384))
    kwargs.setdefault("hidden", ())
    return VGG(**kwargs)


@register_model
def vgg_t(**kwargs) -> VGG:
    """Tiny real-time VGG: 16-128 filters, one conv at full resolution, global pooling (0.29M
    parameters, ~24M multiply-adds: ~1.4x cnn3's time per face, vgg_s 5.6x)."""
    kwargs.setdefault("widths", (16, 32, 64, 128))
    kwargs.setdefault("depth", (1, 2, 2, 2))
    kwargs.setdefault("hidden", ())
    return VGG(**kwargs)
