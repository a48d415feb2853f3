"""dlproxy: a deep-learning inference proxy."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dlproxy")  # the one version source: pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
