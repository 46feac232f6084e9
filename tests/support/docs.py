"""The code examples of the README and the documentation pages, for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^(`{3,}|~{3,})")


def _level(line: str) -> int:
    """The Markdown heading level of ``line`` (0 when it is not a heading)."""
    match = re.match(r"^(#{1,6}) ", line)
    return len(match.group(1)) if match else 0


def sections(path: str) -> list[tuple[str, str]]:
    """``(heading line, text up to the next heading of any level)`` for each heading of ``path``.

    ``path`` is relative to the repository root. Lines inside code fences (``# comments`` in a
    bash block) are never headings.
    """
    found: list[tuple[str, list[str]]] = []
    fence: str | None = None
    for line in (ROOT / path).read_text().splitlines():
        match = _FENCE.match(line)
        if match and fence is None:
            fence = match.group(1)
        elif match and line.strip() == fence:
            fence = None
        elif fence is None and _level(line):
            found.append((line, []))
            continue
        if found:
            found[-1][1].append(line)
    return [(heading, "\n".join(lines)) for heading, lines in found]


def section(path: str, heading: str) -> str:
    """The text of ``path`` under the line ``heading``, down to the next heading of its level.

    Subsections are included. Raises ``KeyError`` when ``path`` has no such heading, so a test
    fails loudly when an example moves.
    """
    level = _level(heading)
    text: list[str] = []
    inside = False
    for line, body in sections(path):
        if inside and _level(line) <= level:
            break
        if line == heading:
            inside = True
        if inside:
            text.extend([line, body])
    if not inside:
        raise KeyError(f"{path} has no heading {heading!r}")
    return "\n".join(text)


def code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced ``language`` blocks of ``text``, in order."""
    return re.findall(rf"^```{language}\n(.*?)\n```$", text, re.S | re.M)
