"""Domain errors -> HTTP status codes and headers: the one place where that mapping lives."""

from __future__ import annotations

import logging

from dlproxy import errors

log = logging.getLogger("dlproxy.http")

STATUS: dict[type[Exception], int] = {
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.ModelNotFound: 404,
    errors.PayloadTooLarge: 413,
    errors.ModelError: 500,
    errors.QueryOfDeath: 500,
    errors.RateLimited: 429,
    errors.Overloaded: 503,
    errors.InstanceFailed: 503,
    errors.DeadlineExceeded: 504,
}

OPENAI_CODES: dict[int, str] = {  # OpenAI's own where it has one (invalid_api_key, ...)
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "model_not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "overloaded",
    504: "timeout",
}

OPENAI_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def describe(exc: BaseException) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """Status, message and extra headers for an exception; anything unknown is a logged 500."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            headers: list[tuple[bytes, bytes]] = []
            if isinstance(exc, errors.Overloaded | errors.InstanceFailed):
                retry_after = getattr(exc, "retry_after", 1.0)
                headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
            elif isinstance(exc, errors.Unauthorized):
                headers.append((b"www-authenticate", b'Bearer realm="dlproxy"'))
            return status, str(exc), headers
    log.error("unexpected error while serving a request", exc_info=exc)
    return 500, "internal error (a bug in dlproxy; see the server log)", []
