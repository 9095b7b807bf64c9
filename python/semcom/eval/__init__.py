"""Metrics, baselines and sweeps over the codec and the radio chain."""
