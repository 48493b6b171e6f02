"""Images in and out with exact geometry: one :class:`Image` type, readers, writers."""

from .image import Image

__all__ = ["Image"]
