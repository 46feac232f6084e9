"""Griffe extension: read the docstrings' ``Example:`` sections as examples.

The code's Google-style docstrings head their doctests ``Example:`` (singular, which ruff's
``google`` convention accepts); griffe treats only ``Examples:`` as an examples section and would
render the doctest lines as Markdown. Loaded by mkdocstrings (``extensions:`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(Extension):
    """Rename ``Example:`` section headers to ``Examples:`` before griffe parses a docstring."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        """Rewrite the header of the object's docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
