"""alignmix: build, curate and mix post-training data, then train on it."""

__version__ = "0.1.0"
