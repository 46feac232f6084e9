"""Read a folder (or one file) of documents to index: JSONL, plain text and Markdown.

* ``.jsonl`` / ``.jsonl.gz``: one JSON object per line, either a document
  ``{"id": "...", "title": "...", "text": "...", ...}`` or a record in the ``ragpress batch``
  format ``{"id": "q1", "docs": [{"title": "...", "text": "..."}, ...]}``. Fields other than
  ``id``, ``title`` and ``text`` become metadata.
* ``.md`` / ``.markdown``: the title is the front matter's ``title:`` or the first ``#``
  heading, else the file name; front matter is not indexed.
* ``.txt`` / ``.text``: the whole file is one document, titled by its file name.

Every document's metadata has ``source`` (the path relative to the folder) and, for JSONL,
``line``. Ids default to the relative path (``guide/setup.md``) or ``path:line``. Bad input
stops the read with an error naming the file, the line and the fix, before any work is done.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from ragpress.exceptions import RequestValidationError
from ragpress.types import Passage

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DOCUMENT_SUFFIXES", "LoadedDocuments", "load_documents"]

DOCUMENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".md", ".markdown", ".txt", ".text")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)---[ \t]*(?:\r?\n|\Z)", re.S)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)
_H1 = re.compile(r"^\s{0,3}#[ \t]+(.+?)[ \t#]*$", re.M)
_RESERVED = ("id", "title", "text")


@dataclass
class LoadedDocuments:
    """What :func:`load_documents` found."""

    documents: list[Passage] = field(default_factory=list)
    """One passage per document, in path order, then line order."""
    files: int = 0
    """Files read."""
    skipped: list[str] = field(default_factory=list)
    """Files ignored because their type is not supported (relative paths)."""
    empty: int = 0
    """Documents with no text, left out."""


def load_documents(root: str | Path) -> LoadedDocuments:
    """Read every supported file under ``root`` (recursively; hidden files are skipped).

    Args:
        root: A folder, or a single supported file.

    Returns:
        The documents and a count of what was read and skipped.

    Raises:
        RequestValidationError: ``root`` does not exist, a file is not UTF-8, or a JSONL line
            is not a usable object; ``param`` is ``"path:line"``.
    """
    root = Path(root)
    if not root.exists():
        raise RequestValidationError(
            f"{root} does not exist; pass a folder of .jsonl, .md or .txt files", param="DOCS"
        )
    base = root.parent if root.is_file() else root
    found = LoadedDocuments()
    for path in [root] if root.is_file() else _walk(root):
        relative = path.relative_to(base).as_posix()
        suffix = _suffix(path)
        if suffix not in DOCUMENT_SUFFIXES:
            found.skipped.append(relative)
            continue
        found.files += 1
        documents = (
            _read_jsonl(path, relative)
            if suffix.startswith(".jsonl")
            else [_read_text(path, relative, markdown=suffix in (".md", ".markdown"))]
        )
        for document in documents:
            if document.text.strip():
                found.documents.append(document)
            else:
                found.empty += 1
    return found


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file():
            yield path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def _decode(data: bytes, relative: str, line: int | None = None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"{relative}:{line}" if line is not None else relative
        raise RequestValidationError(
            f"{where} is not UTF-8 (byte {exc.start}); re-encode it as UTF-8 or remove it",
            param=where,
        ) from None


def _read_text(path: Path, relative: str, *, markdown: bool) -> Passage:
    text = _decode(path.read_bytes(), relative)
    title: str | None = None
    if markdown:
        front = _FRONT_MATTER.match(text)
        if front:
            found = _FRONT_TITLE.search(front.group(1))
            title = found.group(1).strip("\"'") if found else None
            text = text[front.end() :]
        if title is None:
            heading = _H1.search(text)
            title = heading.group(1).strip() if heading else None
    return Passage(
        text, title=title or path.stem.replace("_", " "), id=relative, metadata={"source": relative}
    )


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return cast("IO[bytes]", gzip.open(path, "rb"))
    return path.open("rb")


def _read_jsonl(path: Path, relative: str) -> list[Passage]:
    documents: list[Passage] = []
    try:
        with _open(path) as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                record = _parse(raw, relative, number)
                documents.extend(_documents_of(record, relative, number))
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip
        raise RequestValidationError(
            f"{relative} cannot be read ({exc}); check the file is complete", param=relative
        ) from exc
    return documents


def _parse(raw: bytes, relative: str, line: int) -> dict[str, Any]:
    where = f"{relative}:{line}"
    try:
        record = json.loads(_decode(raw, relative, line))
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            f"{where} is not valid JSON ({exc.msg} at column {exc.colno}); fix or remove the line",
            param=where,
        ) from None
    if not isinstance(record, dict):
        raise RequestValidationError(
            f'{where} is a JSON {type(record).__name__}, not an object like {{"text": "..."}}',
            param=where,
        )
    return record


def _documents_of(record: dict[str, Any], relative: str, line: int) -> list[Passage]:
    where = f"{relative}:{line}"
    record_id = record.get("id")
    if "docs" in record and "text" not in record:
        docs = record["docs"]
        if not isinstance(docs, list):
            raise RequestValidationError(
                f'{where}: "docs" must be a list of {{"title", "text"}} objects', param=where
            )
        base = str(record_id) if record_id is not None else where
        return [
            _document(doc, where=f"{where} docs[{i}]", default_id=f"{base}/{i}", relative=relative)
            for i, doc in enumerate(docs)
        ]
    return [_document(record, where=where, default_id=where, relative=relative, line=line)]


def _document(
    doc: Any, *, where: str, default_id: str, relative: str, line: int | None = None
) -> Passage:
    if not isinstance(doc, dict):
        raise RequestValidationError(
            f'{where} must be an object like {{"text": "..."}}, not {type(doc).__name__}',
            param=where,
        )
    text = doc.get("text")
    if not isinstance(text, str):
        raise RequestValidationError(
            f'{where} has no "text" string (got {type(text).__name__}); every document needs '
            'its content in "text"',
            param=f"{where}.text",
        )
    title = doc.get("title")
    if title is not None and not isinstance(title, str):
        raise RequestValidationError(
            f'{where}: "title" must be a string, not {type(title).__name__}',
            param=f"{where}.title",
        )
    metadata = {k: v for k, v in doc.items() if k not in _RESERVED}
    metadata.setdefault("source", relative)
    if line is not None:
        metadata.setdefault("line", line)
    identifier = doc.get("id")
    return Passage(
        text,
        title=title,
        id=str(identifier) if identifier is not None else default_id,
        metadata=metadata,
    )
