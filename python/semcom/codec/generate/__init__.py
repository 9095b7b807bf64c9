"""Generators: text + known pixels -> image. Importing this package registers the built-in backends."""

from semcom.codec.generate import render, sd_inpaint  # noqa: F401  (registers backends; sd_inpaint imports diffusers lazily)
