"""Models as the worker process runs them."""
