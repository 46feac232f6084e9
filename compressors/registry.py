"""The registry of compressors: name -> ``"module:Class"``, imported only when asked for.

Settings and requests name a compressor by its registry name (which equals its module's name)
or by a ``"package.module:Class"`` path, resolved the way sentence-transformers resolves saved
modules.
"""

from __future__ import annotations

import importlib
from typing import Any

from ragpress.compressors.base import BaseCompressor
from ragpress.exceptions import ConfigurationError

__all__ = [
    "COMPRESSORS",
    "SOFT_METHODS",
    "available_compressors",
    "compressor_class",
    "load_compressor",
]

COMPRESSORS: dict[str, str] = {
    "sentence_selection": "ragpress.compressors.sentence_selection:SentenceSelectionCompressor",
    "exit": "ragpress.compressors.exit.compressor:ExitCompressor",
    "compllm": "ragpress.compressors.compllm.compressor:CompLLMCompressor",
    "llmlingua2": "ragpress.compressors.llmlingua2.compressor:LLMLingua2Compressor",
}
"""Built-in compressors by registry name."""

SOFT_METHODS: frozenset[str] = frozenset({"compllm"})
"""Registry names whose compressors emit soft embeddings (``output_kind == "embeddings"``),
known without importing them (a test keeps this in step with the classes)."""


def available_compressors() -> list[str]:
    """Registry names of the built-in compressors (whether or not their extra is installed)."""
    return sorted(COMPRESSORS)


def compressor_class(name: str, /) -> type[BaseCompressor]:
    """Resolve a registry name or a ``"package.module:Class"`` path to a compressor class.

    Raises:
        ConfigurationError: Unknown name, or the path does not name a compressor class.
        MissingDependencyError: The compressor's extra is not installed.
    """
    target = COMPRESSORS.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ConfigurationError(
            f"unknown compressor {name!r}; known: {available_compressors()}, "
            "or give a 'package.module:Class' path"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"compressor module {module_name!r} not found") from exc
        raise
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseCompressor)):
        raise ConfigurationError(f"{target!r} is not a BaseCompressor subclass")
    return cls


def load_compressor(name: str, /, **params: Any) -> BaseCompressor:
    """Instantiate a compressor by registry name or ``"package.module:Class"`` path.

    Args:
        name: Registry name (see :func:`available_compressors`) or dotted path.
        **params: Constructor arguments; each must be one of the class's ``config_keys`` or
            ``injected_keys``.

    Raises:
        ConfigurationError: Unknown name, or a parameter the compressor does not accept.
        MissingDependencyError: The compressor's extra is not installed.

    Example:
        >>> from ragpress.compressors import load_compressor
        >>> load_compressor("sentence_selection", embedder=my_embedder)  # doctest: +SKIP
    """
    cls = compressor_class(name)
    allowed = (*cls.config_keys, *cls.injected_keys)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"{cls.__name__} does not accept {unknown}; allowed: {sorted(allowed)}"
        )
    return cls(**params)
