"""Fetching allow-listed image URLs: https only, bounded in size and time, redirects checked.

The image policy calls the fetcher from a worker thread for URLs whose host is on the
allow-list. The fetcher checks every hop again: a redirect is followed only to an https URL on
the allow-list (never to another host, never to plain http), at most ``max_redirects`` times.
Bodies are streamed and cut off past ``max_bytes`` (after content decoding, so a compressed
bomb cannot get through), and the whole fetch, redirects included, must end within
``timeout_seconds``. Every failure is an
:class:`~ragpress.middleware.serving.images.ImageFetchError`, after which the part is sent on as
it was (the provider may fetch it itself).
"""

from __future__ import annotations

import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ragpress.exceptions import ImageFetchError, MissingDependencyError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "httpx", extra="proxy") from exc

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

__all__ = ["DEFAULT_MAX_REDIRECTS", "ImageFetcher"]

DEFAULT_MAX_REDIRECTS = 3
_USER_AGENT = "ragpress-image-fetcher"


class ImageFetcher:
    """Fetches image bytes from allow-listed https hosts (thread-safe; one connection pool).

    Args:
        allow_hosts: Hosts that may be fetched from (``cdn.example.org``, ``*.example.org``).
        max_bytes: Largest body accepted.
        timeout_seconds: Longest time one fetch may take, redirects included.
        ca_file: PEM bundle of trusted CAs (default: certifi's).
        max_redirects: Redirects followed (each to an allowed https URL).
        transport: Replaces the network (tests).
    """

    def __init__(
        self,
        allow_hosts: Collection[str],
        *,
        max_bytes: int,
        timeout_seconds: float = 10.0,
        ca_file: str | Path | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from ragpress.compressors.visual.api.parts import host_allowed

        self._host_allowed = host_allowed
        self.allow_hosts = tuple(allow_hosts)
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.max_redirects = max_redirects
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        )
        self._client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            headers={"user-agent": _USER_AGENT, "accept": "image/*, application/pdf"},
            transport=transport,
        )

    def __call__(self, url: str) -> bytes:
        """The body of ``url``.

        Raises:
            ImageFetchError: A hop is not an allowed https URL, the server failed or answered
                an error, the body is too large, or the time ran out.
        """
        deadline = time.monotonic() + self.timeout_seconds
        for _ in range(self.max_redirects + 1):
            self._check(url)
            try:
                with self._client.stream("GET", url) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise ImageFetchError(
                            f"{_host(url)} answered {response.status_code} for the image"
                        )
                    return self._read(response, deadline)
            except httpx.HTTPError as exc:
                raise ImageFetchError(
                    f"fetching the image from {_host(url)} failed: {type(exc).__name__}: {exc}"
                ) from exc
        raise ImageFetchError(f"more than {self.max_redirects} redirects for the image")

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.hostname is None or parts.username is not None:
            raise ImageFetchError(f"refused to fetch {url[:200]!r}: only https URLs are fetched")
        if not self._host_allowed(parts.hostname, self.allow_hosts):
            raise ImageFetchError(
                f"refused to fetch from {parts.hostname!r}: not in allow_hosts (a redirect "
                "may only lead to an allowed host)"
            )

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageFetchError(
                f"the image at {_host(str(response.url))} is {int(declared):,} bytes, above the "
                f"{self.max_bytes:,}-byte limit (RAGPRESS_PROXY__IMAGES__MAX_IMAGE_BYTES)"
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise ImageFetchError(
                    f"the image at {_host(str(response.url))} is above the {self.max_bytes:,}-byte "
                    "limit (RAGPRESS_PROXY__IMAGES__MAX_IMAGE_BYTES)"
                )
            if time.monotonic() > deadline:
                raise ImageFetchError(
                    f"fetching the image from {_host(str(response.url))} took longer than "
                    f"{self.timeout_seconds:g} s"
                )
        return bytes(body)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _host(url: str) -> str:
    return repr(urlsplit(url).hostname or "?")
