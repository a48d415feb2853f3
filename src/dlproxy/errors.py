"""Domain errors. HTTP status codes are mapped from these in exactly one place (http/errors.py)."""

from __future__ import annotations


class DlproxyError(Exception):
    """Base of every error a client may see; the message is meant for a person, ``param`` names
    the request field at fault when one is (OpenAI errors carry it)."""

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class BadRequest(DlproxyError):
    """The request is malformed or does not match the model's inputs."""


class ModelNotFound(DlproxyError):
    """No model of that name is served."""

    def __init__(self, message: str = "", *, param: str | None = "model") -> None:
        super().__init__(message, param=param)


class PayloadTooLarge(DlproxyError):
    """The body, the item count or a text is over its limit."""


class Overloaded(DlproxyError):
    """Every queue that could take the request is full; try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Overloaded):
    """This client sent more than its rate limit allows; try again after ``retry_after`` s."""


class DeadlineExceeded(DlproxyError):
    """The request's deadline passed before an answer was ready."""


class InstanceFailed(DlproxyError):
    """The instance failed the request: it died or stopped answering while it held the request's
    batch (``held``), or it could not take the request (retried elsewhere either way)."""

    def __init__(self, message: str = "", *, held: bool = False) -> None:
        super().__init__(message)
        self.held = held


class QueryOfDeath(DlproxyError):
    """The request was in the batch of an instance that died or hung, and again when retried
    alone: it is not retried again (it may be what stops the instances)."""


class ModelError(DlproxyError):
    """The model itself raised while computing a batch."""


class Unauthorized(DlproxyError):
    """Missing or wrong credentials."""


class Forbidden(DlproxyError):
    """The credentials are valid but do not allow this route (an API key on an admin route)."""
