"""Model backends and their building blocks."""

from .transformer import GenericTransformer

__all__ = ["GenericTransformer"]
