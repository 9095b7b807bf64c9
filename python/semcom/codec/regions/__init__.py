"""Region splitters: image -> key mask. Importing this package registers the built-in backends."""

from semcom.codec.regions import hf_segmentation, mediapipe_person, saliency, user  # noqa: F401  (registers backends; hf_segmentation and mediapipe_person import their libraries lazily)
