"""Calibration and evaluation text: packaged sources, files, the token cache, and text the model
generates itself (selfgen)."""
