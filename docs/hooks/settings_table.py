"""MkDocs hook: the configuration page's settings table, rendered from the settings model.

``docs/configuration.md`` holds the placeholder below; at build time it is replaced by
:func:`ragpress.config.settings_table`, the table ``ragpress config env`` prints, so the page
can never fall behind the model. Registered under ``hooks:`` in ``mkdocs.yml``.
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = "<!-- settings-table -->"


def render(markdown: str) -> str:
    """``markdown`` with the placeholder replaced by the current settings table."""
    from ragpress.config import settings_table

    return markdown.replace(PLACEHOLDER, settings_table())


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    """Fill in the settings table on the page that asks for it."""
    if PLACEHOLDER not in markdown:
        return markdown
    return render(markdown)
