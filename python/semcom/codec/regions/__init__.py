"""Region splitters: image -> key mask. Importing this package registers the built-in backends."""

from semcom.codec.regions import saliency, user  # noqa: F401  (registers backends)
