"""dlproxy: a deep-learning inference proxy.

The public Python API (``docs/compatibility.md``: stable):

- ``dlproxy.PythonModel``: the base class of your own Python model (``setup``, ``predict``,
  ``close``; ``examples/custom_model``).
- ``dlproxy.create_app(settings)``: dlproxy as an ASGI app whose lifespan starts and drains the
  instances, to serve with any ASGI server or mount in FastAPI (``examples/fastapi_app.py``).
- ``dlproxy.serve(settings)``: run the server from a script, until SIGINT/SIGTERM.
- ``dlproxy.Settings``: every setting (docs/configuration.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlproxy.version import __version__

if TYPE_CHECKING:
    from dlproxy.models.python import PythonModel
    from dlproxy.service import create_app
    from dlproxy.settings import Settings

__all__ = ["PythonModel", "Settings", "__version__", "create_app", "serve"]


def serve(settings: Settings | None = None, **values: Any) -> None:
    """Run dlproxy until SIGINT/SIGTERM (``serve(models=["echo"], port=8000)``), as
    ``dlproxy serve`` does, then drain."""
    import uvloop

    from dlproxy.app import serve as run
    from dlproxy.settings import Settings

    uvloop.run(run(settings if settings is not None else Settings(**values)))


def __getattr__(name: str) -> Any:
    """The public names, imported when first used (a worker imports none of the server)."""
    if name == "PythonModel":
        from dlproxy.models.python import PythonModel

        return PythonModel
    if name == "create_app":
        from dlproxy.service import create_app

        return create_app
    if name == "Settings":
        from dlproxy.settings import Settings

        return Settings
    raise AttributeError(f"module 'dlproxy' has no attribute {name!r}")
