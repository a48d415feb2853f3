"""dlproxy: a deep-learning inference proxy."""

__version__ = "0.1.0"
