"""Import optional dependencies with an error that says which extra installs them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["require"]


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra.

    Args:
        module: Dotted import name, e.g. ``"sentence_transformers"``.
        extra: The ragpress extra that installs it, e.g. ``"embedders"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: The module (or one of its own dependencies) is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra=extra) from exc
