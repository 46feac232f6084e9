"""ragpress exceptions.

* RagpressError                           base of everything ragpress raises on purpose
  + ConfigurationError                    bad settings or constructor arguments; raised at start-up
    - ModelNotFoundError                  a model id/path cannot be resolved offline
  + MissingDependencyError (+ImportError) an extra is not installed; the message has the pip command
  + RequestValidationError (.param)       the caller sent something unusable -> HTTP 400
  + ClientAuthenticationError             no valid ragpress API key from the client -> HTTP 401
  + CompressionError                      a compressor failed on valid input
    - BudgetError (.param)                the budget cannot be met (e.g. ``keep`` alone exceeds it)
  + RetrievalError                        index missing, or built with another embedder
  + CacheError
    - CacheUnavailableError               backend unreachable; the pipeline may fail open
  + UpstreamError (.status_code, .body)   the LLM behind the proxy failed
    - UpstreamTimeoutError
  + ImageFetchError                       an allow-listed image URL could not be fetched
  + WorkerFailedError                     a batch worker process died or could not start
* RagpressWarning (UserWarning), RagpressDeprecationWarning (DeprecationWarning)

Messages state the fact, the values and the remedy, e.g.
``target_tokens=10 is below the 25 tokens that keep=('ACME',) needs; raise target_tokens``.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "CacheError",
    "CacheUnavailableError",
    "ClientAuthenticationError",
    "CompressionError",
    "ConfigurationError",
    "ImageFetchError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "RagpressDeprecationWarning",
    "RagpressError",
    "RagpressWarning",
    "RequestValidationError",
    "RetrievalError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "WorkerFailedError",
]


class RagpressError(Exception):
    """Base of every error ragpress raises on purpose."""


class ConfigurationError(RagpressError):
    """Settings or constructor arguments are unusable; raised at start-up, never per request."""


class ModelNotFoundError(ConfigurationError):
    """A model id or path could not be resolved (offline, misspelt, or not downloaded)."""


class MissingDependencyError(RagpressError, ImportError):
    """An optional extra is not installed.

    Args:
        package: The import name that failed.
        extra: The ragpress extra that needs it.
        install: The command that installs it, when the extra alone does not.
    """

    def __init__(self, package: str, *, extra: str, install: str | None = None) -> None:
        self.package = package
        self.extra = extra
        if install is None:
            message = f"it comes with the {extra!r} extra: pip install 'ragpress[{extra}]'"
        else:
            message = f"the {extra!r} extra needs it too: {install}"
        super().__init__(f"{package!r} is not installed; {message}")


class RequestValidationError(RagpressError, ValueError):
    """The caller sent something unusable; ``param`` names the offending field.

    Args:
        message: What is wrong and how to fix it.
        param: Dotted path of the field at fault (``docs[3].text``), or ``None``.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class ClientAuthenticationError(RagpressError):
    """The client did not present a valid ragpress API key (HTTP 401)."""

    status_code = 401


class CompressionError(RagpressError):
    """A compressor failed on input that passed validation."""


class BudgetError(CompressionError, RequestValidationError):
    """The token budget cannot be met, for example because ``keep`` alone exceeds it."""

    def __init__(self, message: str, *, param: str | None = "target_tokens") -> None:
        RequestValidationError.__init__(self, message, param=param)


class RetrievalError(RagpressError):
    """The retriever cannot serve: missing index, or built with another embedder."""


class CacheError(RagpressError):
    """A cache backend failed."""


class CacheUnavailableError(CacheError):
    """The cache backend cannot be reached; callers may treat this as a miss."""


class UpstreamError(RagpressError):
    """The LLM API behind the proxy failed.

    Args:
        message: What happened.
        status_code: HTTP status the upstream answered with (502 when it did not answer).
        body: The upstream response body, passed through to the client when useful.
    """

    def __init__(self, message: str, *, status_code: int = 502, body: bytes | None = None) -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(message)


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time."""

    def __init__(self, message: str, *, body: bytes | None = None) -> None:
        super().__init__(message, status_code=504, body=body)


class ImageFetchError(RagpressError):
    """An allow-listed image URL could not be fetched (the part is then sent as it was)."""


class WorkerFailedError(RagpressError):
    """A batch worker process died (killed, out of memory) or could not start."""


class RagpressWarning(UserWarning):
    """Something works, but not the way the caller probably wants."""


class RagpressDeprecationWarning(DeprecationWarning):
    """A ragpress API that will be removed; the message names its replacement."""
