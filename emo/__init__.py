"""emo: facial-expression recognition on FER-2013 with PyTorch Lightning and Hydra."""

from emo.errors import EmoError

__version__ = "0.1.0"
__all__ = ["EmoError", "__version__"]
