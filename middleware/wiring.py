"""Settings become objects here, and only here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragpress.cache.base import CacheStore, NullCache
from ragpress.cache.memory import MemoryCache
from ragpress.compressors import compressor_class, load_compressor
from ragpress.config import CacheSettings, EmbedderSettings, RagpressSettings
from ragpress.exceptions import ConfigurationError
from ragpress.middleware.cache_policy import FailOpenCache
from ragpress.middleware.pipeline import Pipeline, Stage
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions

if TYPE_CHECKING:
    from ragpress.compressors.base import BaseCompressor
    from ragpress.retrieval.faiss import FaissRetriever
    from ragpress.types import Embedder, Retriever

__all__ = [
    "build_cache",
    "build_compressor",
    "build_embedder",
    "build_pipeline",
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
            shared["embedder"] = build_embedder(settings.embedder)
        kwargs["embedder"] = shared["embedder"]
    if "tokenizer" in cls.config_keys and "tokenizer" not in kwargs:
        kwargs["tokenizer"] = settings.compression.tokenizer
    return load_compressor(method, **kwargs)
