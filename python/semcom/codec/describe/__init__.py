"""Describers: non-key region -> text. Importing this package registers the built-in backends."""

from semcom.codec.describe import blip, colour_layout  # noqa: F401  (registers backends; blip imports transformers lazily)
