"""Generators: text + sketch + known pixels -> image. Importing this package registers the built-in backends."""

from semcom.codec.generate import esrgan, render, sd_inpaint  # noqa: F401  (registers backends; esrgan and sd_inpaint import their packages lazily)
