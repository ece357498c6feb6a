"""Networks: plain ``nn.Module`` classes, created by name through the registry."""

from emo.models import cnn3, resnet, vgg  # noqa: F401  (registers the architectures)
from emo.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
