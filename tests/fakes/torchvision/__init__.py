"""A tiny stand-in for torchvision with the API surface advkit's adapter uses (``torchvision.models``)."""

from torchvision import models

__version__ = "0.0+fake"
__all__ = ["models"]
