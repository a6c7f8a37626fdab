"""compress: prune, reconstruct, fine-tune, evaluate and ship causal language models."""

__version__ = "0.1.0"
