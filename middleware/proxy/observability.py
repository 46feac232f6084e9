"""Prometheus metrics and structured request logs; neither ever holds a secret or a prompt.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so several apps (tests, or
ragpress mounted next to other code) never collide. Log records are JSON objects built from
the ``extra`` fields of a record; headers and bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import MissingDependencyError

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("prometheus_client", extra="proxy") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

    from ragpress.middleware.pipeline.cache_policy import CacheCounters
    from ragpress.middleware.serving.chat import Prepared

__all__ = ["JsonFormatter", "ProxyMetrics", "configure_logging"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _CacheCollector:
    """Exposes the pipelines' cache counters (hits, misses, backend errors) at scrape time."""

    def __init__(self, counters: Callable[[], list[CacheCounters]]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self._counters()
        for name, attribute, doc in (
            ("ragpress_cache_hits", "hits", "Per-document analyses served from the cache."),
            ("ragpress_cache_misses", "misses", "Per-document analyses computed afresh."),
            ("ragpress_cache_errors", "errors", "Cache operations that failed (backend down)."),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(sum(getattr(c, attribute) for c in counters)))
            yield family


class ProxyMetrics:
    """The proxy's metrics, in a registry of their own.

    Args:
        cache_counters: Returns the cache counters to expose (read at scrape time).
    """

    def __init__(self, cache_counters: Callable[[], list[CacheCounters]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragpress_requests", "Requests served.", ["route", "status", "compression"], registry=r
        )
        self.latency = Histogram(
            "ragpress_request_duration_seconds",
            "Time from request to the last byte of the response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compression_seconds = Histogram(
            "ragpress_compression_duration_seconds",
            "Time spent compressing one request.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_before = Counter(
            "ragpress_tokens_before",
            "Tokens of the marked context (and image parts) before compression.",
            registry=r,
        )
        self.tokens_after = Counter(
            "ragpress_tokens_after", "Tokens of the marked context after compression.", registry=r
        )
        self.tokens_saved = Counter(
            "ragpress_tokens_saved", "Tokens removed from requests by compression.", registry=r
        )
        self.images = Counter(
            "ragpress_images",
            "Image and PDF parts handled, by route (image, ocr, pdf, unchanged, ...).",
            ["route"],
            registry=r,
        )
        self.image_tokens_before = Counter(
            "ragpress_image_tokens_before",
            "Image tokens of the handled parts as received (the target model's image cost).",
            registry=r,
        )
        self.image_tokens_after = Counter(
            "ragpress_image_tokens_after",
            "Tokens of what replaced them (a smaller image, or OCR text).",
            registry=r,
        )
        self.compression_failures = Counter(
            "ragpress_compression_failures",
            "Requests whose compression failed (forwarded uncompressed when fail_open).",
            registry=r,
        )
        self.upstream_errors = Counter(
            "ragpress_upstream_errors",
            "Upstream failures: unreachable, timeout, broken stream, or a 5xx answer.",
            ["kind"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "ragpress_client_disconnects",
            "Requests whose client went away before the answer was complete (not an upstream "
            "failure).",
            ["route"],
            registry=r,
        )
        self.streams = Gauge("ragpress_streams_active", "Streams being relayed.", registry=r)
        if cache_counters is not None:
            r.register(_CacheCollector(cache_counters))

    def observe(self, route: str, status: int, prepared: Prepared | None, seconds: float) -> None:
        """Count one finished request."""
        outcome = prepared.outcome if prepared is not None else "none"
        self.requests.labels(route, str(status), outcome).inc()
        self.latency.labels(route).observe(seconds)
        if prepared is not None and prepared.summary is not None:
            for image_route, count in prepared.summary.image_routes.items():
                self.images.labels(image_route).inc(count)
        if prepared is None or prepared.outcome == "unmarked":
            return
        if prepared.outcome == "failed-open":
            self.compression_failures.inc()
        summary = prepared.summary
        if prepared.outcome == "compressed" and summary is not None:
            self.compression_seconds.observe(prepared.ms / 1e3)
            self.tokens_before.inc(summary.tokens_before)
            self.tokens_after.inc(summary.tokens_after)
            self.tokens_saved.inc(max(0, summary.tokens_before - summary.tokens_after))
            self.image_tokens_before.inc(summary.image_tokens_before)
            self.image_tokens_after.inc(summary.image_tokens_after)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record``."""
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(log_format: str = "json", *, level: int = logging.INFO) -> None:
    """Send ragpress's logs to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("ragpress")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def elapsed(started: float) -> float:
    """Seconds since ``started`` (a ``time.perf_counter()`` value)."""
    return time.perf_counter() - started
