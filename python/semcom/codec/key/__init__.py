"""Key-tile codecs. Importing this package registers the built-in backends.

Each backend's ``codec_id`` class attribute is its wire id (``registry.codec_names("key")``): 1 webp,
2 jpeg, 3 learned, 4 sd-vae, 5 avif; an id, once used, is never reassigned.
"""

from semcom.codec.key import avif, classical, learned, sd_vae  # noqa: F401  (registers backends; sd_vae imports diffusers lazily)
