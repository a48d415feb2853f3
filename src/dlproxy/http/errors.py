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


# Errors whose text is the server's business (a worker's exception, an upstream's address with
# any credentials in it): logged under the request id; the client gets a safe message.
INTERNAL: dict[type[Exception], str] = {
    errors.ModelError: "the model failed on this request",
    errors.InstanceFailed: "the instances computing this request failed or stopped; sending it "
    "again may succeed",
}


def describe(
    exc: BaseException, request_id: str = ""
) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """Status, message and extra headers for an exception; anything unknown is a logged 500."""
    reference = f"request id {request_id}; " if request_id else ""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            headers: list[tuple[bytes, bytes]] = []
            if isinstance(exc, errors.Overloaded | errors.InstanceFailed):
                retry_after = getattr(exc, "retry_after", 1.0)
                headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
            elif isinstance(exc, errors.Unauthorized):
                headers.append((b"www-authenticate", b'Bearer realm="dlproxy"'))
            safe = INTERNAL.get(cls)
            if safe is None:
                return status, str(exc), headers
            log.warning("request %s: %s: %s", request_id or "-", type(exc).__name__, exc)
            return status, f"{safe} ({reference}the server log has the error)", headers
    log.error("unexpected error while serving request %s", request_id or "-", exc_info=exc)
    return 500, f"internal error, a bug in dlproxy ({reference}the server log has it)", []
