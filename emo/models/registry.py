"""Networks by name: ``@register_model`` on a factory, ``create_model("cnn3", num_classes=7)``.

Keeping the architecture a plain string lets checkpoints rebuild their network without Hydra.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from emo.errors import EmoError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory ``fn(*, in_chans, num_classes, **kwargs) -> nn.Module`` under its name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, *, in_chans: int = 1, num_classes: int = 7, **kwargs) -> nn.Module:
    """Build the registered network ``name``."""
    if name not in _MODELS:
        raise EmoError(f"unknown model {name!r}: choose one of {', '.join(list_models())}")
    return _MODELS[name](in_chans=in_chans, num_classes=num_classes, **kwargs)
