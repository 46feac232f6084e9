"""A FAISS vector index over passages (extra ``faiss``).

:class:`FaissRetriever` owns one FAISS index and the passages it was built from, row for row.
On disk it is a folder of three files:

* ``index.faiss`` — the FAISS index (always written as a CPU index);
* ``passages.jsonl`` — one passage per row: text, title, id, metadata and the content hash of
  what was embedded;
* ``config.json`` — dimension, metric, index type and parameters, and the embedder's
  fingerprint, checked on load so an index is never searched with vectors from another model.

Index types: ``flat`` is exact (inner product over normalised vectors: cosine), ``hnsw`` and
``ivf`` are approximate and scale further; ``auto`` picks ``flat`` up to
:data:`AUTO_EXACT_LIMIT` passages and ``hnsw`` beyond. Every type can give back its stored
vectors exactly, which is what makes the embedding cache work: vectors are keyed by the
SHA-256 of the text embedded, so :meth:`FaissRetriever.add` and a rebuild with ``reuse=`` never
embed a chunk the index already holds.

GPU: with ``device="auto"`` (the default) a flat or IVF index moves to the first GPU when the
installed faiss has GPU support (``faiss-gpu-*`` wheels) and a GPU is visible; HNSW has no GPU
implementation in FAISS and stays on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ragpress.exceptions import (
    ConfigurationError,
    MissingDependencyError,
    RequestValidationError,
    RetrievalError,
)
from ragpress.hashing import content_hash
from ragpress.retrieval.index_format import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    PASSAGES_FILE,
    BuildStats,
    IndexOptions,
    embedding_text,
    passage_line,
    read_index_config,
    read_passages,
    validate_passages,
)
from ragpress.types import SearchHit

try:
    import faiss
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "faiss", extra="faiss") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

    from ragpress.retrieval.index_format import Metric
    from ragpress.types import Embedder, Passage

__all__ = ["AUTO_EXACT_LIMIT", "BuildStats", "FaissRetriever", "IndexOptions"]

logger = logging.getLogger("ragpress.retrieval")

AUTO_EXACT_LIMIT = 100_000
"""``index_type="auto"`` builds an exact flat index up to this many passages, HNSW beyond."""
_MIN_POINTS_PER_CELL = 39  # FAISS k-means wants at least this many training points per centroid


class FaissRetriever:
    """Passages in a FAISS index, searched by the embedding of a query.

    Implements :class:`ragpress.types.Retriever`. Build one with :meth:`build` or
    :meth:`load`; the constructor takes a ready FAISS index. Thread-safe: searches and
    additions are serialised by a lock, embedding happens outside it.

    Example:
        >>> from ragpress.retrieval import load_embedder
        >>> embedder = load_embedder()                                    # doctest: +SKIP
        >>> retriever = FaissRetriever.build(passages, embedder)          # doctest: +SKIP
        >>> retriever.save("my-index")                                    # doctest: +SKIP
        >>> FaissRetriever.load("my-index", embedder).search("who?", 5)   # doctest: +SKIP
    """

    def __init__(
        self,
        index: faiss.Index,
        passages: Sequence[Passage],
        hashes: Sequence[str],
        embedder: Embedder,
        *,
        options: IndexOptions,
        device: str = "auto",
    ) -> None:
        if index.ntotal != len(passages) or len(passages) != len(hashes):
            raise RetrievalError(
                f"the index holds {index.ntotal} vectors but {len(passages)} passages and "
                f"{len(hashes)} hashes were given; they must match row for row"
            )
        if index.d != embedder.dimension:
            raise RetrievalError(
                f"the index has dimension {index.d}, the embedder {embedder.dimension}; "
                "use the embedder the index was built with"
            )
        self.embedder = embedder
        self.options = options
        self._passages = list(passages)
        self._hashes = list(hashes)
        self._rows: dict[str, int] = {}
        for row, digest in enumerate(self._hashes):
            self._rows.setdefault(digest, row)
        self._lock = threading.RLock()
        self._apply_search_params(index)
        self._index, self._gpu_resources, self.device = _place(index, device)
        self.last_build = BuildStats(len(passages), 0, 0)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        embedder: Embedder,
        options: IndexOptions | None = None,
        *,
        reuse: FaissRetriever | None = None,
        device: str = "auto",
        batch_size: int = 256,
        on_progress: Callable[[int], None] | None = None,
    ) -> FaissRetriever:
        """Embed ``passages`` and index them.

        Args:
            passages: What to index, in row order.
            embedder: Turns texts into vectors; its fingerprint is saved with the index.
            options: Index type and parameters; ``IndexOptions()`` when ``None``.
            reuse: An earlier index built with the same embedder: passages whose embedded
                text it already holds take its vector instead of being embedded again.
            device: ``"auto"`` (GPU when faiss has GPU support and one is visible), ``"cpu"``,
                ``"cuda"`` or ``"cuda:N"``.
            batch_size: Texts per embedder call (and per progress report).
            on_progress: Called with the number of passages done after each batch.

        Raises:
            RequestValidationError: A passage is not a :class:`Passage` or its metadata is not
                JSON (the message names ``passages[i]``).
            RetrievalError: ``reuse`` was built with another embedder or title setting.
        """
        options = options or IndexOptions()
        passages = validate_passages(passages)
        texts = [embedding_text(p, options.embed_title) for p in passages]
        hashes = [content_hash(t) for t in texts]
        known: dict[str, npt.NDArray[np.float32]] = {}
        if reuse is not None:
            reuse._check_compatible(embedder, options)
            known = reuse._vectors_for(hashes)
        vectors, embedded = _embed_missing(
            texts, hashes, embedder, known, batch_size=batch_size, on_progress=on_progress
        )
        options = _resolved(options, len(passages))
        index = _new_index(embedder.dimension, options)
        if options.index_type == "ivf":
            index.train(vectors)
        index.add(vectors)
        if options.index_type == "ivf":
            faiss.extract_index_ivf(index).make_direct_map()  # exact vectors back, by row
        retriever = cls(index, passages, hashes, embedder, options=options, device=device)
        retriever.last_build = BuildStats(len(passages), embedded, len(passages) - embedded)
        return retriever

    def add(
        self,
        passages: Sequence[Passage],
        *,
        batch_size: int = 256,
        on_progress: Callable[[int], None] | None = None,
    ) -> BuildStats:
        """Embed and append ``passages``; texts the index already holds are not re-embedded.

        Args:
            passages: New rows, appended in order.
            batch_size: Texts per embedder call.
            on_progress: Called with the number of passages done after each batch.

        Returns:
            How many passages were added, embedded and reused.
        """
        passages = validate_passages(passages)
        texts = [embedding_text(p, self.options.embed_title) for p in passages]
        hashes = [content_hash(t) for t in texts]
        with self._lock:
            known = self._vectors_for(hashes)
        vectors, embedded = _embed_missing(
            texts, hashes, self.embedder, known, batch_size=batch_size, on_progress=on_progress
        )
        with self._lock:
            self._index.add(vectors)
            start = len(self._passages)
            self._passages.extend(passages)
            self._hashes.extend(hashes)
            for offset, digest in enumerate(hashes):
                self._rows.setdefault(digest, start + offset)
        self.last_build = BuildStats(len(passages), embedded, len(passages) - embedded)
        return self.last_build

    # -- search ----------------------------------------------------------------------------

    def search(self, query: str, k: int = 8) -> list[SearchHit]:
        """The ``k`` passages most similar to ``query``, best first.

        Raises:
            RequestValidationError: ``query`` is not a string or ``k`` is not a positive integer.
        """
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 8) -> list[list[SearchHit]]:
        """:meth:`search` for several queries with one embedder call and one index search."""
        for i, query in enumerate(queries):
            if not isinstance(query, str):
                raise RequestValidationError(
                    f"queries[{i}] must be a string, not {type(query).__name__}",
                    param=f"queries[{i}]",
                )
        _check_k(k)
        if not queries:
            return []
        vectors = _as_matrix(self.embedder.embed(list(queries), kind="query"), self.dimension)
        return self.search_vectors(vectors, k)

    def search_vectors(self, vectors: npt.ArrayLike, k: int = 8) -> list[list[SearchHit]]:
        """The ``k`` best hits for each row of ``vectors`` (shape ``(n, dimension)``)."""
        _check_k(k)
        matrix = _as_matrix(vectors, self.dimension)
        with self._lock:
            if self._index.ntotal == 0 or len(matrix) == 0:
                return [[] for _ in range(len(matrix))]
            scores, rows = self._index.search(matrix, min(k, self._index.ntotal))
            passages = self._passages
        sign = -1.0 if self.options.metric == "l2" else 1.0
        return [
            [
                SearchHit(passages[row], sign * float(score))
                for score, row in zip(score_row, row_ids, strict=True)
                if row >= 0
            ]
            for score_row, row_ids in zip(scores, rows, strict=True)
        ]

    # -- persistence -----------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``index.faiss``, ``passages.jsonl`` and ``config.json`` into ``directory``.

        Each file is written beside its target and renamed into place, ``config.json`` last;
        it records the sizes of the other two, so a save cut short is detected on load.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            cpu_index = _to_cpu(self._index, self.device)
            index_tmp = folder / f".{INDEX_FILE}.tmp"
            faiss.write_index(cpu_index, str(index_tmp))
            passages_tmp = folder / f".{PASSAGES_FILE}.tmp"
            with passages_tmp.open("w", encoding="utf-8") as handle:
                for passage, digest in zip(self._passages, self._hashes, strict=True):
                    handle.write(passage_line(passage, digest))
            config = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "count": len(self._passages),
                "dimension": self.dimension,
                "metric": self.options.metric,
                "index_type": self.options.index_type,
                "options": asdict(self.options),
                "embedder": {
                    "fingerprint": self.embedder.fingerprint,
                    "model": getattr(self.embedder, "model_name", None),
                },
                "faiss_version": faiss.__version__,
                "sizes": {
                    INDEX_FILE: index_tmp.stat().st_size,
                    PASSAGES_FILE: passages_tmp.stat().st_size,
                },
            }
        config_tmp = folder / f".{CONFIG_FILE}.tmp"
        config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        index_tmp.replace(folder / INDEX_FILE)
        passages_tmp.replace(folder / PASSAGES_FILE)
        config_tmp.replace(folder / CONFIG_FILE)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        embedder: Embedder,
        *,
        device: str = "auto",
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> FaissRetriever:
        """Open an index written by :meth:`save`.

        Args:
            directory: The folder given to :meth:`save`.
            embedder: Must have the fingerprint the index was built with.
            device: As in :meth:`build`.
            nprobe: Override the saved IVF ``nprobe``.
            ef_search: Override the saved HNSW ``ef_search``.

        Raises:
            RetrievalError: The folder is missing or incomplete, or the embedder, dimension or
                metric differ from the saved ones (the message gives both values).
        """
        folder = Path(directory)
        config = read_index_config(folder)
        saved = config["embedder"]
        if saved.get("fingerprint") != embedder.fingerprint:
            raise RetrievalError(
                f"the index at {folder} was built with embedder {saved.get('model')!r} "
                f"(fingerprint {saved.get('fingerprint')}), but the embedder given is "
                f"{getattr(embedder, 'model_name', type(embedder).__name__)!r} (fingerprint "
                f"{embedder.fingerprint}); load it with the model it was built with "
                f"(RAGPRESS_EMBEDDER__MODEL={saved.get('model')}) or rebuild it with this one"
            )
        if config["dimension"] != embedder.dimension:
            raise RetrievalError(
                f"the index at {folder} has dimension {config['dimension']}, the embedder "
                f"{embedder.dimension}; use the embedder the index was built with"
            )
        try:
            options = IndexOptions(**config["options"])
        except (TypeError, ConfigurationError) as exc:
            raise RetrievalError(f"{folder / CONFIG_FILE} has unusable options: {exc}") from exc
        options = replace(
            options,
            nprobe=nprobe if nprobe is not None else options.nprobe,
            ef_search=ef_search if ef_search is not None else options.ef_search,
        )
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as exc:
            raise RetrievalError(
                f"{folder / INDEX_FILE} is not a readable FAISS index ({exc}); rebuild it"
            ) from exc
        expected_metric = _faiss_metric(options.metric)
        if index.metric_type != expected_metric or index.d != config["dimension"]:
            raise RetrievalError(
                f"{folder / INDEX_FILE} has metric {_metric_name(index.metric_type)} and "
                f"dimension {index.d}, but config.json says {options.metric} and "
                f"{config['dimension']}; the files come from different builds, rebuild the index"
            )
        passages, hashes = read_passages(folder / PASSAGES_FILE)
        if not (index.ntotal == len(passages) == config["count"]):
            raise RetrievalError(
                f"{folder} holds {index.ntotal} vectors and {len(passages)} passages, but "
                f"config.json says {config['count']}; the files come from different builds, "
                "rebuild the index"
            )
        return cls(index, passages, hashes, embedder, options=options, device=device)

    # -- introspection ---------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """Vector dimension."""
        return int(self._index.d)

    @property
    def passages(self) -> list[Passage]:
        """The indexed passages, in row order (a copy)."""
        with self._lock:
            return list(self._passages)

    def __len__(self) -> int:
        return len(self._passages)

    def __repr__(self) -> str:
        return (
            f"FaissRetriever({len(self)} passages, index_type={self.options.index_type!r}, "
            f"metric={self.options.metric!r}, device={self.device!r})"
        )

    # -- internals -------------------------------------------------------------------------

    def _apply_search_params(self, index: faiss.Index) -> None:
        if self.options.index_type == "ivf":
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = min(self.options.nprobe or 1, ivf.nlist)
        elif self.options.index_type == "hnsw":
            hnsw_index = cast("faiss.IndexHNSW", faiss.downcast_index(index))
            hnsw_index.hnsw.efSearch = self.options.ef_search

    def _check_compatible(self, embedder: Embedder, options: IndexOptions) -> None:
        if self.embedder.fingerprint != embedder.fingerprint:
            raise RetrievalError(
                f"cannot reuse vectors embedded by fingerprint {self.embedder.fingerprint} for "
                f"an index built with fingerprint {embedder.fingerprint}; rebuild from scratch"
            )
        if self.options.embed_title != options.embed_title:
            raise RetrievalError(
                f"cannot reuse vectors embedded with embed_title={self.options.embed_title} "
                f"for an index with embed_title={options.embed_title}; rebuild from scratch"
            )

    def _vectors_for(self, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Stored vectors of the texts in ``hashes`` that this index already holds."""
        with self._lock:
            wanted = {h: self._rows[h] for h in dict.fromkeys(hashes) if h in self._rows}
            if not wanted:
                return {}
            rows = np.fromiter(wanted.values(), dtype=np.int64, count=len(wanted))
            vectors = _to_cpu(self._index, self.device).reconstruct_batch(rows)
        return dict(zip(wanted, vectors, strict=True))


# -- helpers -------------------------------------------------------------------------------


def _embed_missing(
    texts: Sequence[str],
    hashes: Sequence[str],
    embedder: Embedder,
    known: dict[str, npt.NDArray[np.float32]],
    *,
    batch_size: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[npt.NDArray[np.float32], int]:
    """Vectors for every text, embedding only distinct texts not in ``known``."""
    if batch_size < 1:
        raise ConfigurationError(f"batch_size={batch_size} must be positive")
    vectors: dict[str, npt.NDArray[np.float32]] = dict(known)
    todo = {h: t for h, t in zip(hashes, texts, strict=True) if h not in vectors}
    pending = list(todo.items())
    if on_progress is not None and len(texts) > len(pending):
        on_progress(len(texts) - len(pending))
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        embedded = _as_matrix(
            embedder.embed([t for _, t in batch], kind="passage"), embedder.dimension
        )
        if len(embedded) != len(batch):
            raise RetrievalError(
                f"the embedder returned {len(embedded)} vectors for {len(batch)} texts"
            )
        if not np.isfinite(embedded).all():
            raise RetrievalError("the embedder returned NaN or infinite values")
        vectors.update(zip((h for h, _ in batch), embedded, strict=True))
        if on_progress is not None:
            on_progress(len(batch))
    matrix = np.empty((len(hashes), embedder.dimension), dtype=np.float32)
    for row, digest in enumerate(hashes):
        matrix[row] = vectors[digest]
    return matrix, len(pending)


def _as_matrix(vectors: Any, dimension: int) -> npt.NDArray[np.float32]:
    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise RetrievalError(
            f"vectors of shape {matrix.shape} do not fit an index of dimension {dimension}"
        )
    return matrix


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RequestValidationError(f"k={k!r} must be a whole number >= 1", param="k")


def _resolved(options: IndexOptions, count: int) -> IndexOptions:
    """Fix ``auto`` and the IVF sizes for a corpus of ``count`` passages."""
    index_type = options.index_type
    if index_type == "auto":
        index_type = "flat" if count <= AUTO_EXACT_LIMIT else "hnsw"
    if index_type != "ivf":
        return replace(options, index_type=index_type)
    most = max(1, count // _MIN_POINTS_PER_CELL)
    if options.nlist is not None and options.nlist > most:
        raise ConfigurationError(
            f"nlist={options.nlist} needs at least {options.nlist * _MIN_POINTS_PER_CELL} "
            f"passages to train, there are {count}; use nlist <= {most} or index_type='flat'"
        )
    nlist = options.nlist or min(most, max(1, round(4 * math.sqrt(count))))
    nprobe = options.nprobe or max(1, nlist // 4)  # recall@10 ~0.95 on MiniLM (bench/retrieval.py)
    return replace(options, index_type="ivf", nlist=nlist, nprobe=min(nprobe, nlist))


def _faiss_metric(metric: Metric) -> int:
    return int(faiss.METRIC_INNER_PRODUCT if metric == "inner_product" else faiss.METRIC_L2)


def _metric_name(metric_type: int) -> str:
    return {int(faiss.METRIC_INNER_PRODUCT): "inner_product", int(faiss.METRIC_L2): "l2"}.get(
        int(metric_type), f"faiss metric {metric_type}"
    )


def _new_index(dimension: int, options: IndexOptions) -> faiss.Index:
    metric = _faiss_metric(options.metric)
    if options.index_type == "flat":
        return faiss.IndexFlat(dimension, metric)
    if options.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, options.hnsw_m, metric)
        index.hnsw.efConstruction = options.ef_construction
        return index
    quantizer = faiss.IndexFlat(dimension, metric)
    assert options.nlist is not None, "resolve the options first"
    return faiss.IndexIVFFlat(quantizer, dimension, options.nlist, metric)


def _gpu_count() -> int:
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def _place(index: faiss.Index, device: str) -> tuple[faiss.Index, Any, str]:
    """Move ``index`` to the GPU that ``device`` asks for, when possible."""
    if device == "cpu":
        return index, None, "cpu"
    if device != "auto" and not (device == "cuda" or device.startswith("cuda:")):
        raise ConfigurationError(f"device={device!r} must be auto, cpu, cuda or cuda:N")
    gpus = _gpu_count()
    if gpus == 0:
        if device == "auto":
            return index, None, "cpu"
        missing = "GPU support" if not hasattr(faiss, "StandardGpuResources") else "visible GPU"
        raise ConfigurationError(
            f"device={device!r} needs GPU FAISS and a visible GPU, but there is no {missing}; "
            "install faiss-gpu-cu12 on a CUDA machine, or use device='cpu'"
        )
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        logger.info("HNSW has no GPU implementation in FAISS; the index stays on the CPU")
        return index, None, "cpu"
    gpu = int(device.partition(":")[2] or 0)
    if gpu >= gpus:
        raise ConfigurationError(f"device={device!r}, but only {gpus} GPU(s) are visible")
    resources = faiss.StandardGpuResources()  # pragma: no cover - needs a GPU
    return faiss.index_cpu_to_gpu(resources, gpu, index), resources, f"cuda:{gpu}"


def _to_cpu(index: faiss.Index, device: str) -> faiss.Index:
    if device == "cpu":
        return index
    return faiss.index_gpu_to_cpu(index)  # pragma: no cover - needs a GPU
