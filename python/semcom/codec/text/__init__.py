"""Text codecs. Importing this package registers the built-in backends.

Each backend's ``codec_id`` class attribute is its wire id (``registry.codec_names("text")``): 1 zlib,
2 zlib-v2; an id, once used, is never reassigned.
"""

from semcom.codec.text import zlib_dict  # noqa: F401  (registers backends)
