"""Weight-only int8 storage for packed checkpoints: a quarter of fp32's bytes, computed in float.

Every convolution and linear weight (a floating tensor of two or more dimensions) is stored as
int8 with one scale per output channel (symmetric: ``w ~ q * scale``, ``q`` in -127..127); biases
and batch-norm tensors, a few kilobytes, stay as they were (fp16 when packed so). Loading
dequantizes them back to float, so the network runs exactly as before, on weights rounded to
1/254 of each channel's largest magnitude. Measured on PublicTest with flip (``vgg_fer``,
``vgg_m``, ``resnet_s``, ``vgg_s``): the accuracy moves by a few faces at most; the README's
ensemble row gives the number for the bundled ensemble.

The scales live under :data:`SCALES_KEY` beside ``state_dict``; :func:`dequantize_checkpoint`
removes them, so a checkpoint that went through it is an ordinary float checkpoint again.
"""

from __future__ import annotations

import torch

#: Where a packed checkpoint keeps its int8 weights' per-channel scales: {state_dict key: (C_out,)}.
SCALES_KEY = "emo_int8_scales"


def quantize_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``state`` with every weight of two or more dimensions as int8, and those weights' scales.

    Returns:
        (state, scales): the new state dict (other tensors unchanged) and, for each quantized key,
        its per-output-channel scales in float32.
    """
    out, scales = {}, {}
    for key, value in state.items():
        if not value.is_floating_point() or value.ndim < 2:
            out[key] = value
            continue
        w = value.float()
        peak = w.abs().flatten(1).amax(1).clamp_min(1e-12)  # one per output channel
        scale = peak / 127.0
        q = (w / scale.view(-1, *([1] * (w.ndim - 1)))).round().clamp(-127, 127).to(torch.int8)
        out[key], scales[key] = q, scale
    return out, scales


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 weights ``q`` (C_out, ...) and their per-channel scales (C_out,) as float32."""
    return q.float() * scale.float().view(-1, *([1] * (q.ndim - 1)))


def dequantize_checkpoint(checkpoint: dict) -> dict:
    """Turn ``checkpoint``'s int8 weights back into float32, in place (and return it).

    A checkpoint without :data:`SCALES_KEY` is returned untouched, so calling this twice is safe.
    """
    scales = checkpoint.pop(SCALES_KEY, None)
    if not scales:
        return checkpoint
    state = checkpoint["state_dict"]
    for key, scale in scales.items():
        state[key] = dequantize(state[key], scale)
    return checkpoint
