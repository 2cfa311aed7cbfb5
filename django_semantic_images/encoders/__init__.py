"""Encoders: models that turn images and text into vectors."""

from .base import Encoder, ImageEmbeddings
from .registry import get_encoder

__all__ = ["Encoder", "ImageEmbeddings", "get_encoder"]
