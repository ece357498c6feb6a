"""ResNets with a 3x3 stem and no early max-pool, so the 48-px input is not thrown away in the
first layer (stages at 48, 24, 12 and 6 px): ``resnet18_fer`` (GPU) and ``resnet_s``, one block
per stage, which trains on a CPU and brings a different architecture to an ensemble."""

from __future__ import annotations

import torch
from torch import nn

from emo.models.registry import register_model
from emo.models.vgg import conv_bn_relu


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(in_ch, out_ch, stride),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_ch == out_ch
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with a 3x3 stem and no max-pool: stages at 48, 24, 12 and 6 px."""

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 7,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        dropout: float = 0.2,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        layers: list[nn.Module] = conv_bn_relu(in_chans, widths[0])
        ch = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(ch, w, 2 if (j == 0 and i > 0) else 1))
                ch = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(ch, num_classes)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 1, 48, 48) -> (B, widths[-1], 6, 6)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def resnet18_fer(**kwargs) -> ResNet:
    """ResNet-18 for 48-px faces (~11.2M parameters; 22 MB in fp16)."""
    return ResNet(**kwargs)


@register_model
def resnet_s(**kwargs) -> ResNet:
    """Small ResNet: one basic block per stage at 32-256 filters (1.23M parameters, 142M
    multiply-adds per face; vgg_s 105M)."""
    kwargs.setdefault("widths", (32, 64, 128, 256))
    kwargs.setdefault("blocks", (1, 1, 1, 1))
    return ResNet(**kwargs)
