"""The on-disk format of a ragpress vector index, and its options (no faiss needed).

An index folder holds ``index.faiss`` (the vectors), ``passages.jsonl`` (one passage per
vector, row for row, with the content hash of the text that was embedded) and ``config.json``
(format version, dimension, metric, index type and parameters, the embedder's fingerprint and
model name, and the byte sizes of the other two files). This module reads and writes everything
but the FAISS file, so the CLI can inspect an index without loading faiss or a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import ConfigurationError, RequestValidationError, RetrievalError
from ragpress.types import Passage

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "PASSAGES_FILE",
    "BuildStats",
    "IndexOptions",
    "IndexType",
    "Metric",
    "embedding_text",
    "passage_line",
    "read_index_config",
    "read_passages",
    "validate_passages",
]

IndexType = Literal["auto", "flat", "ivf", "hnsw"]
Metric = Literal["inner_product", "l2"]
INDEX_FILE = "index.faiss"
PASSAGES_FILE = "passages.jsonl"
CONFIG_FILE = "config.json"
FORMAT = "ragpress-faiss"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """How the index is built and searched. Saved in ``config.json``."""

    index_type: IndexType = "auto"
    """``flat`` (exact), ``hnsw`` or ``ivf`` (approximate), or ``auto`` (by corpus size)."""
    metric: Metric = "inner_product"
    """``inner_product`` (cosine for normalised vectors) or ``l2``; hit scores are higher-is-
    better either way (``l2`` hits score the negated squared distance)."""
    nlist: int | None = None
    """IVF cells; ``None`` takes ``4 * sqrt(n)``, at most ``n / 39``."""
    nprobe: int | None = None
    """IVF cells visited per query; ``None`` takes ``nlist / 4`` (at least 1)."""
    hnsw_m: int = 32
    """HNSW neighbours per node: more is more accurate, bigger and slower to build."""
    ef_construction: int = 80
    """HNSW build-time search depth."""
    ef_search: int = 128
    """HNSW query-time search depth: more is more accurate and slower."""
    embed_title: bool = True
    """Embed ``"title\\ntext"`` rather than the text alone, so chunks keep their context."""

    def __post_init__(self) -> None:
        if self.index_type not in ("auto", "flat", "ivf", "hnsw"):
            raise ConfigurationError(
                f"index_type={self.index_type!r} is not one of auto, flat, ivf, hnsw"
            )
        if self.metric not in ("inner_product", "l2"):
            raise ConfigurationError(f"metric={self.metric!r} is not inner_product or l2")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigurationError(f"{name}={value!r} must be a whole number >= 1")


@dataclass(frozen=True, slots=True)
class BuildStats:
    """What the last :meth:`FaissRetriever.build` or :meth:`~FaissRetriever.add` did."""

    passages: int
    """Passages added."""
    embedded: int
    """Distinct texts sent to the embedder."""
    reused: int
    """Passages whose vector came from the cache (an earlier index or this one)."""


def read_index_config(directory: str | Path) -> dict[str, Any]:
    """Read and check an index folder's ``config.json`` (no index or model is loaded).

    Raises:
        RetrievalError: The folder is not a complete ragpress index.
    """
    folder = Path(directory)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise RetrievalError(
            f"{folder} is not a ragpress index (no {CONFIG_FILE}); build one with "
            f"`ragpress index build DOCS {folder}`"
        )
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RetrievalError(f"{path} is not valid JSON ({exc}); rebuild the index") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise RetrievalError(f"{path} does not describe a ragpress FAISS index")
    if config.get("format_version") != FORMAT_VERSION:
        raise RetrievalError(
            f"{path} has format_version {config.get('format_version')}, this ragpress reads "
            f"{FORMAT_VERSION}; rebuild the index with this version"
        )
    for name, size in config.get("sizes", {}).items():
        file = folder / name
        actual = file.stat().st_size if file.is_file() else None
        if actual != size:
            raise RetrievalError(
                f"{file} is {'missing' if actual is None else f'{actual} bytes'} but config.json "
                f"expects {size} bytes; the save was interrupted or the files were mixed, "
                "rebuild the index"
            )
    return config


def validate_passages(passages: Sequence[Passage]) -> list[Passage]:
    """The passages as a list, checked to be :class:`Passage` objects with JSON metadata.

    Raises:
        RequestValidationError: Naming ``passages[i]`` and what is wrong.
    """
    out = list(passages)
    for i, passage in enumerate(out):
        if not isinstance(passage, Passage):
            raise RequestValidationError(
                f"passages[{i}] must be a Passage, not {type(passage).__name__}",
                param=f"passages[{i}]",
            )
        try:
            json.dumps(dict(passage.metadata), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RequestValidationError(
                f"passages[{i}].metadata cannot be saved as JSON ({exc}); keep metadata to "
                "strings, numbers, booleans, lists and objects",
                param=f"passages[{i}].metadata",
            ) from None
    return out


def _embedding_text(passage: Passage, embed_title: bool) -> str:
    if embed_title and passage.title:
        return f"{passage.title}\n{passage.text}"
    return passage.text


def embedding_text(passage: Passage, embed_title: bool) -> str:
    """The text embedded for ``passage``: ``"title\\ntext"``, or the text alone."""
    if embed_title and passage.title:
        return f"{passage.title}\n{passage.text}"
    return passage.text


def passage_line(passage: Passage, digest: str) -> str:
    """One ``passages.jsonl`` line (with its newline)."""
    record = {
        "text": passage.text,
        "title": passage.title,
        "id": passage.id,
        "metadata": dict(passage.metadata),
        "hash": digest,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def read_passages(path: Path) -> tuple[list[Passage], list[str]]:
    """The passages and content hashes of a ``passages.jsonl`` file, in row order.

    Raises:
        RetrievalError: The file is missing or a line is not a passage record.
    """
    passages: list[Passage] = []
    hashes: list[str] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    passages.append(
                        Passage(
                            record["text"],
                            title=record["title"],
                            id=record["id"],
                            metadata=record["metadata"],
                        )
                    )
                    hashes.append(record["hash"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise RetrievalError(
                        f"{path}:{number} is not a passage record ({exc}); rebuild the index"
                    ) from exc
    except FileNotFoundError:
        raise RetrievalError(f"{path} is missing; rebuild the index") from None
    return passages, hashes
