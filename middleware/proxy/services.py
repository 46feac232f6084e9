"""Settings become the proxy's optional services: image-part compression and soft prompts.

Both are built, and their settings checked, before the server accepts traffic: a missing extra,
an unknown model family or a soft method with nowhere to run fails at start-up with a
:class:`~ragpress.exceptions.ConfigurationError` that says what to set.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ragpress.exceptions import ConfigurationError
from ragpress.redaction import mask_url

if TYPE_CHECKING:
    from ragpress.config import RagpressSettings
    from ragpress.middleware.pipeline.factory import PipelineSet
    from ragpress.middleware.proxy.fetch import ImageFetcher
    from ragpress.middleware.serving.parts import PartCompressor
    from ragpress.middleware.serving.soft import SoftChat

__all__ = ["build_image_handlers", "build_soft_chat"]

logger = logging.getLogger("ragpress.proxy")


def build_image_handlers(
    settings: RagpressSettings, pipelines: PipelineSet
) -> tuple[dict[str, PartCompressor], ImageFetcher | None]:
    """The image/PDF part handler by part type, and its URL fetcher (``proxy.images``).

    Returns:
        ``({}, None)`` when ``proxy.images.enabled`` is false.

    Raises:
        ConfigurationError: ``default_model`` names no known image model family.
        MissingDependencyError: The ``visual`` extra is not installed.
    """
    images = settings.proxy.images
    if not images.enabled:
        return {}, None
    from ragpress.middleware.proxy.fetch import ImageFetcher
    from ragpress.middleware.serving.images import (
        IMAGE_PART_TYPES,
        ImagePartHandler,
        resolve_image_model,
    )

    if images.default_model is not None:
        family, _ = resolve_image_model(images.default_model, "openai")
        if family is None:
            from ragpress.compressors.visual.api.costs import MODEL_FAMILIES

            raise ConfigurationError(
                f"RAGPRESS_PROXY__IMAGES__DEFAULT_MODEL={images.default_model!r} is not a model "
                f"with a known image cost; use one of {sorted(MODEL_FAMILIES)}"
            )
    fetcher = (
        ImageFetcher(
            images.allow_hosts,
            max_bytes=images.max_image_bytes,
            timeout_seconds=images.fetch_timeout_seconds,
            ca_file=images.ca_file,
        )
        if images.allow_hosts
        else None
    )
    handler = ImagePartHandler(
        allow_hosts=images.allow_hosts,
        fetcher=fetcher,
        on_disallowed_url=images.on_disallowed_url,
        ocr=images.ocr,
        max_bytes=images.max_image_bytes,
        budget_tokens=images.budget_tokens,
        default_model=images.default_model,
        cache=pipelines.pipelines[pipelines.default].cache,
    )
    return dict.fromkeys(IMAGE_PART_TYPES, handler), fetcher


def build_soft_chat(settings: RagpressSettings, pipelines: PipelineSet) -> SoftChat | None:
    """The soft-prompt service for every offered method that emits embeddings (``proxy.soft``).

    Returns:
        ``None`` when no offered method emits embeddings.

    Raises:
        ConfigurationError: A method emits embeddings but ``proxy.soft.backend`` is ``none``
            (the upstream is an API that takes text), or vLLM is misconfigured.
    """
    soft = settings.proxy.soft
    methods = [m for m, p in pipelines.pipelines.items() if p.output_kind == "embeddings"]
    if not methods:
        if soft.backend != "none":
            logger.warning(
                "RAGPRESS_PROXY__SOFT__BACKEND=%s is set, but no offered method emits soft "
                "embeddings (add compllm to RAGPRESS_PROXY__METHODS to use it)",
                soft.backend,
            )
        return None
    if soft.backend == "none":
        raise ConfigurationError(
            f"method(s) {methods} produce soft embeddings, which only a model that reads input "
            "embeddings can use; the upstream "
            f"{mask_url(settings.upstream.base_url)} is taken to be an API that reads text. "
            "Set RAGPRESS_PROXY__SOFT__BACKEND=local (generate in process with "
            "the compressor's own base model) or RAGPRESS_PROXY__SOFT__BACKEND=vllm with "
            "RAGPRESS_PROXY__SOFT__URL=http://HOST:8000/v1 (vLLM >= 0.11.1 started with "
            "--enable-prompt-embeds); or offer text methods only"
        )
    from ragpress.middleware.generation import SoftPromptService, build_embedding_backend
    from ragpress.middleware.serving.soft import SoftChat

    api_key = soft.api_key or settings.upstream.api_key
    services = {}
    for method in methods:
        pipeline = pipelines.pipelines[method]
        backend = build_embedding_backend(
            soft.backend,
            compressor=pipeline.stages[-1].compressor,
            url=soft.url or settings.upstream.base_url,
            model=soft.model,
            api_key=api_key.get_secret_value() if api_key is not None else None,
            timeout_seconds=soft.timeout_seconds,
        )
        services[method] = SoftPromptService(pipeline, backend)
    return SoftChat(
        services,
        default_max_tokens=soft.max_tokens,
        fail_open=settings.proxy.fail_open,
        timeout_seconds=settings.proxy.compression_timeout_seconds,
    )
