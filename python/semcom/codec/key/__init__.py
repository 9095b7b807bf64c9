"""Key-tile codecs. Importing this package registers the built-in backends.

``KEY_CODEC_NAMES`` maps the wire ``codec_id`` back to a backend name for the receiver; an id, once
used, must never be reassigned.
"""

from semcom.codec.key import classical, learned, sd_vae  # noqa: F401  (registers backends; sd_vae imports diffusers lazily)

KEY_CODEC_NAMES = {1: "webp", 2: "jpeg", 3: "learned", 4: "sd-vae"}


def key_codec_name_for_id(codec_id: int) -> str:
    """Backend name of a key codec id read off the wire; ValueError for ids this build lacks."""
    try:
        return KEY_CODEC_NAMES[codec_id]
    except KeyError:
        raise ValueError(f"unknown key codec id {codec_id}; known: {KEY_CODEC_NAMES}") from None
