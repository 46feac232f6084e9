"""The compressors an evaluation compares, built from settings with one shared embedder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragpress.exceptions import ConfigurationError
from ragpress.middleware.evaluation.contexts import NAIVE_PARAMS, REFERENCES
from ragpress.middleware.pipeline.factory import build_embedder, build_pipeline

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ragpress.config import RagpressSettings
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import Embedder

__all__ = ["BASELINES", "build_method_pipelines"]

BASELINES = ("random", "naive")
"""Baselines run at every ratio next to the methods."""

_NEEDS_EMBEDDER = ("sentence_selection",)


def build_method_pipelines(
    settings: RagpressSettings,
    methods: Sequence[str],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    naive: bool = True,
    embedder: Embedder | None = None,
) -> dict[str, Pipeline]:
    """One pipeline per method (a registry name or an ``a+b`` chain), plus the naive baseline.

    Args:
        settings: Embedder, tokenizer and limits; each method replaces the compression method.
        methods: Registry names or chains, in table order.
        params: Constructor arguments per method name (for a chain: its last stage).
        naive: Add ``"naive"``, sentence selection with every refinement off.
        embedder: Share this embedder (default: the configured one, loaded once when a method
            needs it).

    Raises:
        ConfigurationError: A method name clashes with a reference or baseline name, or a
            parameter is not one the compressor accepts.
        MissingDependencyError: A method's extra is not installed.
    """
    params = params or {}
    clashes = sorted(set(methods) & {*REFERENCES, *BASELINES})
    if clashes:
        raise ConfigurationError(
            f"{clashes} name references or baselines, which every evaluation includes; "
            "list only compressors in methods"
        )
    unknown = sorted(set(params) - set(methods) - {"naive"})
    if unknown:
        raise ConfigurationError(f"parameters given for {unknown}, which are not in {methods}")
    wanted: dict[str, tuple[str, dict[str, Any]]] = {}
    if naive:
        wanted["naive"] = ("sentence_selection", {**NAIVE_PARAMS, **params.get("naive", {})})
    for method in methods:
        wanted[method] = (method, dict(params.get(method, {})))
    if embedder is None and any(
        stage in _NEEDS_EMBEDDER for chain, _ in wanted.values() for stage in chain.split("+")
    ):
        embedder = build_embedder(settings.embedder)
    base = settings.model_dump()
    pipelines: dict[str, Pipeline] = {}
    for name, (method, method_params) in wanted.items():
        data = {
            **base,
            "compression": {
                **base["compression"],
                "method": method,
                "params": {},
                "stages": _stages(method, method_params),
            },
        }
        pipelines[name] = build_pipeline(type(settings).model_validate(data), embedder=embedder)
    return pipelines


def _stages(method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    chain = [m.strip() for m in method.split("+") if m.strip()]
    return [
        {"method": m, "params": params if i == len(chain) - 1 else {}} for i, m in enumerate(chain)
    ]
