"""``ragpress index``: build a FAISS index from a folder of documents, and query it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ragpress.cli._common import (
    check_output_folder,
    dumps,
    fail,
    load_settings,
    progress_bar,
    quiet_third_party,
)
from ragpress.exceptions import RagpressError, RequestValidationError, RetrievalError

if TYPE_CHECKING:
    from ragpress.config import RagpressSettings
    from ragpress.retrieval.faiss import FaissRetriever
    from ragpress.retrieval.index_format import IndexOptions, IndexType
    from ragpress.types import Embedder, Passage

_SNIPPET_CHARS = 240


@click.group()
def index() -> None:
    """Build and query a vector index of your documents (extra faiss).

    \b
    Examples:
      ragpress index build docs/ my-index
      ragpress index query my-index "How do refunds work?" -k 5
    Point the pipeline at it with RAGPRESS_RETRIEVAL__INDEX_DIR=my-index.
    """


@index.command()
@click.argument("docs", metavar="DOCS")
@click.argument("out", metavar="OUT")
@click.option(
    "--index-type",
    type=click.Choice(["auto", "flat", "ivf", "hnsw"]),
    help="flat is exact; hnsw and ivf are approximate (default auto: flat up to 100,000 chunks).",
)
@click.option("--chunk-tokens", type=click.IntRange(min=8), help="Largest chunk (default 200).")
@click.option(
    "--overlap-tokens", type=click.IntRange(min=0), help="Overlap between chunks (default 40)."
)
@click.option("--model", metavar="ID|PATH", help="Embedding model (default all-MiniLM-L6-v2).")
@click.option("--device", metavar="auto|cpu|cuda:N", help="FAISS device (default auto).")
@click.option(
    "--overwrite", is_flag=True, help="Replace OUT even if it holds another model's index."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read RAGPRESS_* settings from this file.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (to stderr).")
def build(
    docs: str,
    out: str,
    index_type: str | None,
    chunk_tokens: int | None,
    overlap_tokens: int | None,
    model: str | None,
    device: str | None,
    overwrite: bool,
    quiet: bool,
    env_file: str | None,
    verbose: bool,
) -> None:
    """Chunk the documents in DOCS, embed them and write the index to OUT.

    \b
    DOCS is a folder (read recursively) or one file:
      *.jsonl, *.jsonl.gz  one document per line, {"id", "title", "text", ...},
                           or batch records {"id", "docs": [{"title", "text"}, ...]}
      *.md, *.markdown     title from front matter or the first # heading
      *.txt, *.text        one document per file
    Other fields become metadata; every chunk records its source, document id and
    character offsets. Identical chunks are indexed once.

    \b
    Running it again on the same OUT embeds only new or changed chunks: vectors of
    unchanged ones are taken from the existing index (matched by content hash).
    """
    from ragpress.retrieval.chunking import ChunkingOptions, chunk_passages
    from ragpress.retrieval.documents import load_documents
    from ragpress.retrieval.index_format import IndexOptions

    check_output_folder(out, param_hint="OUT")
    settings = load_settings(
        env_file=env_file, method=None, cache=None, max_document_chars=None, verbose=verbose
    )
    retrieval = settings.retrieval
    try:
        chunking = ChunkingOptions(
            chunk_tokens=chunk_tokens or retrieval.chunk_tokens,
            overlap_tokens=retrieval.chunk_overlap_tokens
            if overlap_tokens is None
            else overlap_tokens,
            tokenizer=settings.compression.tokenizer,
        )
        options = IndexOptions(index_type=cast("IndexType", index_type or retrieval.index_type))
    except RagpressError as exc:
        raise click.UsageError(str(exc)) from exc
    started = time.perf_counter()
    try:
        loaded = load_documents(docs)
    except RequestValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="DOCS") from exc
    if not loaded.documents:
        raise click.BadParameter(
            f"{docs} holds no documents with text (supported: .jsonl, .jsonl.gz, .md, .txt)",
            param_hint="DOCS",
        )
    chunks, duplicates = _unique(chunk_passages(loaded.documents, chunking))
    quiet_third_party()
    try:
        embedder = _embedder(settings, model)
        reuse = _existing(Path(out), embedder, overwrite=overwrite)
        retriever = _build(chunks, embedder, options, reuse, device or retrieval.device, quiet)
        retriever.save(out)
    except RagpressError as exc:
        fail(exc)
    if not quiet:
        stats = retriever.last_build
        click.echo(
            f"indexed {len(loaded.documents)} documents from {loaded.files} files as "
            f"{len(chunks)} chunks ({duplicates} duplicates dropped"
            f"{f', {len(loaded.skipped)} unsupported files skipped' if loaded.skipped else ''}): "
            f"{stats.embedded} embedded, {stats.reused} reused; "
            f"{retriever.options.index_type} index of dimension {retriever.dimension} "
            f"on {retriever.device} -> {out} in {time.perf_counter() - started:.1f}s",
            err=True,
        )


@index.command()
@click.argument("index_dir", metavar="INDEX")
@click.argument("question")
@click.option("-k", "top_k", type=click.IntRange(min=1), help="Hits to show (default 8).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per hit.")
@click.option(
    "--model", metavar="ID|PATH", help="Embedding model (default: the one the index records)."
)
@click.option("--device", metavar="auto|cpu|cuda:N", help="FAISS device (default auto).")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read RAGPRESS_* settings from this file.",
)
def query(
    index_dir: str,
    question: str,
    top_k: int | None,
    as_json: bool,
    model: str | None,
    device: str | None,
    env_file: str | None,
) -> None:
    """Print the chunks of INDEX most similar to QUESTION, best first.

    \b
    Examples:
      ragpress index query my-index "How do refunds work?"
      ragpress index query my-index "refund window" -k 3 --json
    """
    from ragpress.retrieval.faiss import FaissRetriever
    from ragpress.retrieval.index_format import read_index_config

    settings = load_settings(env_file=env_file, method=None, cache=None, max_document_chars=None)
    retrieval = settings.retrieval
    quiet_third_party()
    try:
        recorded = read_index_config(index_dir)["embedder"].get("model")
        embedder = _embedder(settings, model or recorded)
        retriever = FaissRetriever.load(
            index_dir,
            embedder,
            device=device or retrieval.device,
            nprobe=retrieval.nprobe,
            ef_search=retrieval.ef_search,
        )
        hits = retriever.search(question, top_k or retrieval.top_k)
    except RagpressError as exc:
        fail(exc)
    for rank, hit in enumerate(hits, start=1):
        passage = hit.passage
        if as_json:
            record: dict[str, Any] = {
                "rank": rank,
                "score": round(hit.score, 6),
                "id": passage.id,
                "title": passage.title,
                "text": passage.text,
                "metadata": dict(passage.metadata),
            }
            click.echo(dumps(record))
            continue
        parts = [passage.title, passage.metadata.get("section")]
        where = " / ".join(dict.fromkeys(str(p) for p in parts if p not in (None, "")))
        snippet = " ".join(passage.text.split())
        if len(snippet) > _SNIPPET_CHARS:
            snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
        click.echo(f"{rank}. [{hit.score:.3f}] {passage.id}" + (f"  {where}" if where else ""))
        click.echo(f"   {snippet}")
    if not hits and not as_json:
        click.echo("no hits: the index is empty", err=True)


def _embedder(settings: RagpressSettings, model: str | None) -> Embedder:
    from ragpress.retrieval import load_embedder

    e = settings.embedder
    return load_embedder(model or e.model, device=e.device, batch_size=e.batch_size)


def _existing(out: Path, embedder: Embedder, *, overwrite: bool) -> FaissRetriever | None:
    """The index already in ``out``, whose vectors can be reused, if compatible."""
    from ragpress.retrieval.faiss import FaissRetriever
    from ragpress.retrieval.index_format import CONFIG_FILE

    if not out.exists():
        return None
    if not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a folder", param_hint="OUT")
    if not (out / CONFIG_FILE).is_file():
        if any(out.iterdir()) and not overwrite:
            raise click.BadParameter(
                f"{out} is not empty and holds no ragpress index; choose an empty or new "
                "folder, or pass --overwrite to write the index files into it anyway",
                param_hint="OUT",
            )
        return None
    try:
        return FaissRetriever.load(out, embedder, device="cpu")
    except RetrievalError as exc:
        if overwrite:
            return None
        raise RetrievalError(
            f"{exc}. To replace that index, pass --overwrite (everything is re-embedded)"
        ) from exc


def _build(
    chunks: list[Passage],
    embedder: Embedder,
    options: IndexOptions,
    reuse: FaissRetriever | None,
    device: str,
    quiet: bool,
) -> FaissRetriever:
    from ragpress.retrieval.faiss import FaissRetriever

    progress = progress_bar("embedding", disable=quiet or not sys.stderr.isatty())
    with progress:
        task = progress.add_task("index", total=len(chunks))
        return FaissRetriever.build(
            chunks,
            embedder,
            options,
            reuse=reuse,
            device=device,
            on_progress=lambda n: progress.advance(task, n),
        )


def _unique(chunks: list[Passage]) -> tuple[list[Passage], int]:
    """Chunks with identical title and text kept once (the first)."""
    seen: set[tuple[str | None, str]] = set()
    unique = []
    for chunk in chunks:
        key = (chunk.title, chunk.text)
        if key not in seen:
            seen.add(key)
            unique.append(chunk)
    return unique, len(chunks) - len(unique)
