"""Describers: non-key region -> text. Importing this package registers the built-in backends."""

# blip imports transformers lazily; labels imports torch lazily (on first construction)
from semcom.codec.describe import blip, colour_layout, labels  # noqa: F401  (registers backends)
