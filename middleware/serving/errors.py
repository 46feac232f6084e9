"""The one place an exception becomes an HTTP status and an error body.

Every error the proxy sends has the OpenAI shape ``{"error": {message, type, param, code}}``,
or, on ``/v1/messages``, the Anthropic shape ``{"type": "error", "error": {type, message}}``.
Framework exceptions (404, 405, 413, a malformed body) are recognised by their ``status_code``
attribute, so this module imports no web framework.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ragpress.exceptions import (
    BudgetError,
    ClientAuthenticationError,
    CompressionError,
    ConfigurationError,
    MissingDependencyError,
    RagpressError,
    RequestValidationError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ragpress.redaction import hide_urls

if TYPE_CHECKING:
    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = [
    "HeaderTooLargeError",
    "error_body",
    "error_status",
    "sse_error_event",
    "to_error_response",
]


class HeaderTooLargeError(RequestValidationError):
    """A request header over its size limit (HTTP 431, ``param`` names the header)."""


# exception type -> (HTTP status, OpenAI error type); first match wins, so subclasses go first.
_HTTP_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (ClientAuthenticationError, 401, "authentication_error"),
    (HeaderTooLargeError, 431, "invalid_request_error"),
    (BudgetError, 400, "invalid_request_error"),
    (RequestValidationError, 400, "invalid_request_error"),
    (UpstreamTimeoutError, 504, "upstream_timeout"),
    (UpstreamError, 502, "upstream_error"),
    (MissingDependencyError, 500, "server_error"),
    (ConfigurationError, 500, "server_error"),
    (CompressionError, 500, "compression_error"),
    (RagpressError, 500, "server_error"),
)

# HTTP status -> (OpenAI type, Anthropic type), for framework errors and the Anthropic mapping.
_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    408: ("timeout_error", "timeout_error"),
    413: ("request_too_large", "request_too_large"),
    415: ("invalid_request_error", "invalid_request_error"),
    431: ("invalid_request_error", "invalid_request_error"),
    429: ("rate_limit_error", "rate_limit_error"),
    502: ("upstream_error", "api_error"),
    503: ("service_unavailable", "overloaded_error"),
    504: ("upstream_timeout", "timeout_error"),
}


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and OpenAI error type for ``exc``."""
    for kind, status, label in _HTTP_ERRORS:
        if isinstance(exc, kind):
            return status, label
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return code, _BY_STATUS.get(code, ("api_error", "api_error"))[0]
    return 500, "server_error"


def _message(exc: BaseException, status: int) -> str:
    if isinstance(exc, UpstreamError):
        return hide_urls(str(exc))  # the upstream's address stays in the server's log
    if isinstance(exc, RagpressError | RequestValidationError) and status < 500:
        return str(exc)
    detail = getattr(exc, "detail", None)
    if status < 500 and isinstance(detail, str) and detail:
        return detail
    return "internal error; the server log has the details under this request's id"


def to_error_response(exc: BaseException, *, flavor: Flavor = "openai") -> tuple[int, bytes]:
    """The status and JSON body a client receives for ``exc``.

    Messages of 5xx errors are generic (the log has the traceback) except for upstream
    failures, whose message says what the upstream did, without its address. Nothing secret
    is ever included.
    """
    status, kind = error_status(exc)
    param = getattr(exc, "param", None)
    return status, error_body(status, _message(exc, status), kind=kind, param=param, flavor=flavor)


def error_body(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
    flavor: Flavor = "openai",
) -> bytes:
    """Serialise an error in the flavor's shape."""
    openai_kind, anthropic_kind = _BY_STATUS.get(status, ("api_error", "api_error"))
    if flavor == "anthropic":
        payload: dict[str, object] = {
            "type": "error",
            "error": {"type": anthropic_kind, "message": message},
        }
    else:
        payload = {
            "error": {
                "message": message,
                "type": kind or openai_kind,
                "param": param,
                "code": code,
            }
        }
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate quoted from the request: escape everything
        return json.dumps(payload, separators=(",", ":")).encode()


def sse_error_event(exc: BaseException, *, flavor: Flavor) -> bytes:
    """The event that reports ``exc`` inside a stream that has already started.

    OpenAI clients see ``data: {"error": ...}`` then ``data: [DONE]``; Anthropic clients see an
    ``event: error`` frame, which is how both APIs report mid-stream failures.
    """
    _, body = to_error_response(exc, flavor=flavor)
    if flavor == "anthropic":
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\ndata: [DONE]\n\n"
