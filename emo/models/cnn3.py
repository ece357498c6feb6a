"""cnn3: the reference three-block CNN for 48x48 FER-2013 faces (~0.68M parameters)."""

from __future__ import annotations

import torch
from torch import nn

from emo.models.registry import register_model


def conv_block(in_ch: int, out_ch: int, dropout: float) -> nn.Sequential:
    """Conv3x3 -> BatchNorm -> ReLU -> MaxPool 2x2 -> Dropout; halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
    )


class CNN3(nn.Module):
    """Three conv blocks (32, 64, 128 filters), Dense 128, Dense ``num_classes``."""

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 7,
        widths: tuple[int, ...] = (32, 64, 128),
        hidden: int = 128,
        img_size: int = 48,
        conv_dropout: float = 0.25,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        chans = (in_chans, *widths)
        self.features = nn.Sequential(
            *(conv_block(a, b, conv_dropout) for a, b in zip(chans[:-1], chans[1:]))
        )
        side = img_size // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 1, 48, 48) -> (B, 128, 6, 6)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # (B, 128, 6, 6) -> (B, num_classes) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def cnn3(**kwargs) -> CNN3:
    return CNN3(**kwargs)
