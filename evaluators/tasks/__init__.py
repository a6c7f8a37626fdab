"""Zero-shot tasks through lm-eval, online or from packaged data, with a direct checker."""
