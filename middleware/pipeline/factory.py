"""Settings become objects here, and only here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragpress.cache.base import CacheStore, NullCache
from ragpress.cache.memory import MemoryCache
from ragpress.compressors import compressor_class, load_compressor
from ragpress.config import CacheSettings, EmbedderSettings, RagpressSettings
from ragpress.exceptions import ConfigurationError, RequestValidationError
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ragpress.compressors.base import BaseCompressor
    from ragpress.retrieval.faiss import FaissRetriever
    from ragpress.types import Embedder, Retriever

__all__ = [
    "PipelineSet",
    "build_cache",
    "build_compressor",
    "build_embedder",
    "build_pipeline",
    "build_pipeline_set",
    "build_retriever",
    "default_options",
]


def build_pipeline(
    settings: RagpressSettings | None = None,
    *,
    cache: CacheStore | None = None,
    embedder: Embedder | None = None,
    retriever: Retriever | None = None,
) -> Pipeline:
    """Build the pipeline that ``settings`` describe.

    Args:
        settings: Defaults to ``RagpressSettings()`` (environment variables included).
        cache: Use this store instead of the one the settings describe.
        embedder: Share this embedder instead of loading the configured model.
        retriever: Retrieve with this instead of the index at ``retrieval.index_dir``.

    Raises:
        ConfigurationError: Unknown compressor, bad parameters, or a model that cannot load.
        MissingDependencyError: A needed extra is not installed.
        RetrievalError: The index at ``retrieval.index_dir`` is missing, incomplete, or was
            built with another embedder.

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
            signing_key=_secret(settings.cache.signing_key),
        )
    if retriever is None and settings.retrieval.index_dir is not None:
        if "embedder" not in shared:
            shared["embedder"] = build_embedder(settings.embedder)
        retriever = build_retriever(settings, embedder=shared["embedder"])
    return Pipeline(
        stages,
        cache=guarded,
        defaults=default_options(settings),
        token_counter=get_token_counter(settings.compression.tokenizer),
        retriever=retriever,
        top_k=settings.retrieval.top_k,
        on_error=settings.compression.on_error,
        max_document_chars=settings.compression.max_document_chars,
    )


def build_embedder(settings: EmbedderSettings) -> Embedder:
    """The sentence-transformers embedder the settings name (extra ``embedders``)."""
    from ragpress.retrieval import load_embedder

    return load_embedder(settings.model, device=settings.device, batch_size=settings.batch_size)


def build_retriever(
    settings: RagpressSettings, *, embedder: Embedder | None = None
) -> FaissRetriever:
    """Open the FAISS index at ``retrieval.index_dir`` (extra ``faiss``).

    Args:
        settings: Supplies the folder, the search parameters and the device.
        embedder: The embedder to query with; the configured model is loaded when ``None``.

    Raises:
        ConfigurationError: ``retrieval.index_dir`` is not set.
        RetrievalError: The index is missing, incomplete, or built with another embedder.
    """
    from ragpress.retrieval.faiss import FaissRetriever

    retrieval = settings.retrieval
    if retrieval.index_dir is None:
        raise ConfigurationError(
            "retrieval.index_dir is not set; build an index with `ragpress index build DOCS "
            "OUT` and set RAGPRESS_RETRIEVAL__INDEX_DIR=OUT"
        )
    return FaissRetriever.load(
        retrieval.index_dir,
        embedder if embedder is not None else build_embedder(settings.embedder),
        device=retrieval.device,
        nprobe=retrieval.nprobe,
        ef_search=retrieval.ef_search,
    )


def default_options(settings: RagpressSettings) -> CompressionOptions:
    """The budget and ``keep`` strings the settings give every request."""
    c = settings.compression
    return CompressionOptions(
        target_ratio=c.target_ratio,
        rate=c.rate,
        target_tokens=c.target_tokens,
        keep=tuple(c.keep),
        min_ratio=c.min_ratio,
        max_ratio=c.max_ratio,
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
            shared["embedder"] = build_embedder(settings.embedder)
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
    needs_embedder = (
        settings.retrieval.index_dir is not None
        or any(
            "embedder" in compressor_class(stage.strip()).injected_keys
            for name in names
            for stage in name.split("+")
            if stage.strip()
        )
        or any(
            "embedder" in compressor_class(s.method).injected_keys
            for s in settings.compression.stages
        )
    )
    if needs_embedder:
        embedder = build_embedder(settings.embedder)
    retriever: Retriever | None = None
    if settings.retrieval.index_dir is not None:
        retriever = build_retriever(settings, embedder=embedder)
    default = build_pipeline(settings, cache=store, embedder=embedder, retriever=retriever)
    pipelines = {default.method: default}
    for method in settings.proxy.methods:
        if method in pipelines:
            continue
        compression = settings.compression.model_copy(
            update={"method": method, "params": {}, "stages": []}
        )
        variant = settings.model_copy(update={"compression": compression})
        pipelines[method] = build_pipeline(
            variant, cache=store, embedder=embedder, retriever=retriever
        )
    return PipelineSet(pipelines, store=store)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
