"""Evaluators: perplexity, zero-shot tasks, sharpness and concept-bottleneck interventions."""
