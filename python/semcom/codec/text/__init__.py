"""Text codecs. Importing this package registers the built-in backends.

``TEXT_CODEC_NAMES`` maps the wire ``codec_id`` back to a backend name; an id, once used, is never
reassigned.
"""

from semcom.codec.text import zlib_dict  # noqa: F401  (registers backends)

TEXT_CODEC_NAMES = {1: "zlib", 2: "zlib-v2"}


def text_codec_name_for_id(codec_id: int) -> str:
    """Backend name of a text codec id read off the wire; ValueError for ids this build lacks."""
    try:
        return TEXT_CODEC_NAMES[codec_id]
    except KeyError:
        raise ValueError(f"unknown text codec id {codec_id}; known: {TEXT_CODEC_NAMES}") from None
