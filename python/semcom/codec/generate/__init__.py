"""Generators: text + known pixels -> image. Importing this package registers the built-in backends."""

from semcom.codec.generate import render  # noqa: F401  (registers backends)
