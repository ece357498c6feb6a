"""emo: facial-expression recognition on FER-2013 with PyTorch Lightning and Hydra."""

from emo.errors import EmoError

__version__ = "0.1.0"
__all__ = ["EmoError", "EmotionRecognizer", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import emo` (and every `python -m emo.x`) does not pay for torch and Lightning.
    if name == "EmotionRecognizer":
        from emo.inference.recognizer import EmotionRecognizer

        return EmotionRecognizer
    raise AttributeError(f"module 'emo' has no attribute {name!r}")
