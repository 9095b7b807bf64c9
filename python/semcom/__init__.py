"""gr-semcom: send images as meaning over GNU Radio links.

Layers (imports point down only):
  semcom.radio   GNU Radio blocks (needs gnuradio)
  semcom.codec   pure Python/numpy semantics: regions, key tiles, text, generation, wire format
  semcom.eval    metrics and baselines
"""

__version__ = "0.1.0"
