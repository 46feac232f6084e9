"""Settings become objects here, and only here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragpress.cache.base import CacheStore, NullCache
from ragpress.cache.memory import MemoryCache
from ragpress.compressors import compressor_class, load_compressor
from ragpress.config import CacheSettings, RagpressSettings
from ragpress.exceptions import RequestValidationError
from ragpress.middleware.cache_policy import FailOpenCache
from ragpress.middleware.pipeline import Pipeline, Stage
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions

if TYPE_CHECKING:
    from ragpress.compressors.base import BaseCompressor
    from ragpress.types import Embedder

__all__ = [
    "PipelineSet",
    "build_cache",
    "build_compressor",
    "build_pipeline",
    "build_pipeline_set",
    "default_options",
]


def build_pipeline(
    settings: RagpressSettings | None = None,
    *,
    cache: CacheStore | None = None,
    embedder: Embedder | None = None,
) -> Pipeline:
    """Build the pipeline that ``settings`` describe.

    Args:
        settings: Defaults to ``RagpressSettings()`` (environment variables included).
        cache: Use this store instead of the one the settings describe.
        embedder: Share this embedder instead of loading the configured model.

    Raises:
        ConfigurationError: Unknown compressor, bad parameters, or a model that cannot load.
        MissingDependencyError: A needed extra is not installed.

    Example:
        >>> from ragpress import RagpressSettings, build_pipeline
        >>> pipeline = build_pipeline(RagpressSettings(cache={"backend": "none"}))  # doctest: +SKIP
    """
    settings = settings or RagpressSettings()
    shared: dict[str, Any] = {}
    if embedder is not None:
        shared["embedder"] = embedder
    stages = [
        Stage(
            build_compressor(stage.method, stage.params, settings, shared=shared),
            CompressionOptions(target_ratio=stage.target_ratio) if stage.target_ratio else None,
        )
        for stage in settings.compression.chain()
    ]
    store = cache if cache is not None else build_cache(settings.cache)
    guarded = None
    if not isinstance(store, NullCache):
        guarded = FailOpenCache(
            store,
            fail_open=settings.cache.fail_open,
            retry_after_seconds=settings.cache.retry_after_seconds,
            ttl_seconds=settings.cache.ttl_seconds,
        )
    return Pipeline(
        stages,
        cache=guarded,
        defaults=default_options(settings),
        token_counter=get_token_counter(settings.compression.tokenizer),
        on_error=settings.compression.on_error,
        max_document_chars=settings.compression.max_document_chars,
    )


def default_options(settings: RagpressSettings) -> CompressionOptions:
    """The budget and ``keep`` strings the settings give every request."""
    c = settings.compression
    return CompressionOptions(
        target_ratio=c.target_ratio, rate=c.rate, target_tokens=c.target_tokens, keep=tuple(c.keep)
    )


def build_cache(settings: CacheSettings) -> CacheStore:
    """The cache backend the settings name (Redis connects lazily)."""
    if settings.backend == "none":
        return NullCache()
    if settings.backend == "redis":
        from ragpress.cache.redis import RedisCache

        return RedisCache.from_url(
            settings.url, namespace=settings.namespace, default_ttl_seconds=settings.ttl_seconds
        )
    return MemoryCache(max_bytes=settings.max_bytes, default_ttl_seconds=settings.ttl_seconds)


def build_compressor(
    method: str,
    params: dict[str, Any],
    settings: RagpressSettings,
    *,
    shared: dict[str, Any] | None = None,
) -> BaseCompressor:
    """Instantiate one compressor, supplying the live objects it declares it needs.

    Args:
        method: Registry name or ``package.module:Class``.
        params: Its configuration (validated against ``config_keys``).
        settings: Supplies the embedder model and the counting tokenizer.
        shared: Live objects reused across stages (filled in as they are created).
    """
    shared = {} if shared is None else shared
    cls = compressor_class(method)
    kwargs = dict(params)
    if "embedder" in cls.injected_keys and "embedder" not in kwargs:
        if "embedder" not in shared:
            from ragpress.retrieval import load_embedder

            e = settings.embedder
            shared["embedder"] = load_embedder(e.model, device=e.device, batch_size=e.batch_size)
        kwargs["embedder"] = shared["embedder"]
    if "tokenizer" in cls.config_keys and "tokenizer" not in kwargs:
        kwargs["tokenizer"] = settings.compression.tokenizer
    return load_compressor(method, **kwargs)


class PipelineSet:
    """The pipelines a server offers, by method name, sharing one cache and one embedder.

    Args:
        pipelines: Method name -> pipeline; the first one is the default.
        store: The cache store the pipelines share (closed once, by :meth:`aclose`).
    """

    def __init__(self, pipelines: dict[str, Pipeline], *, store: CacheStore | None = None) -> None:
        if not pipelines:
            raise ValueError("a PipelineSet needs at least one pipeline")
        self.pipelines = pipelines
        self.default = next(iter(pipelines))
        self.store = store

    @property
    def methods(self) -> list[str]:
        """The method names clients may ask for."""
        return list(self.pipelines)

    def get(self, method: str | None = None, *, param: str = "method") -> Pipeline:
        """The pipeline for ``method`` (``None``: the default).

        Raises:
            RequestValidationError: The server does not offer ``method``.
        """
        if method is None or method == self.default:
            return self.pipelines[self.default]
        pipeline = self.pipelines.get(method)
        if pipeline is None:
            raise RequestValidationError(
                f"{param}={method!r} is not offered by this server; choose one of "
                f"{self.methods}, or ask the operator to add it to RAGPRESS_PROXY__METHODS",
                param=param,
            )
        return pipeline

    async def aclose(self) -> None:
        """Release every compressor and close the shared cache once."""
        for pipeline in self.pipelines.values():
            for stage in pipeline.stages:
                stage.compressor.close()
        if self.store is not None:
            await self.store.aclose()


def build_pipeline_set(
    settings: RagpressSettings, *, cache: CacheStore | None = None
) -> PipelineSet:
    """The configured pipeline plus one per extra method in ``settings.proxy.methods``.

    Everything is built now, so a missing extra or an unknown name fails at start-up, not on
    the first request that asks for it.

    Raises:
        ConfigurationError: Unknown compressor, bad parameters, or a model that cannot load.
        MissingDependencyError: A needed extra is not installed.
    """
    store = cache if cache is not None else build_cache(settings.cache)
    names = [settings.compression.method, *settings.proxy.methods]
    embedder: Embedder | None = None
    needs_embedder = any(
        "embedder" in compressor_class(stage.strip()).injected_keys
        for name in names
        for stage in name.split("+")
        if stage.strip()
    ) or any(
        "embedder" in compressor_class(s.method).injected_keys for s in settings.compression.stages
    )
    if needs_embedder:
        from ragpress.retrieval import load_embedder

        e = settings.embedder
        embedder = load_embedder(e.model, device=e.device, batch_size=e.batch_size)
    default = build_pipeline(settings, cache=store, embedder=embedder)
    pipelines = {default.method: default}
    for method in settings.proxy.methods:
        if method in pipelines:
            continue
        compression = settings.compression.model_copy(
            update={"method": method, "params": {}, "stages": []}
        )
        variant = settings.model_copy(update={"compression": compression})
        pipelines[method] = build_pipeline(variant, cache=store, embedder=embedder)
    return PipelineSet(pipelines, store=store)
