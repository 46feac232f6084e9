"""Batch compression on Ray Data (extra ``ray``): the same job, beyond one machine.

* A :class:`~ray.data.Datasource` reads the input with ragpress's own readers (JSONL,
  JSONL.gz, Parquet), as one streaming read task that yields blocks of whole micro-batches,
  aligned on record ordinals exactly as the local engine aligns them.
* ``map_batches`` runs :class:`_CompressActor`: each actor builds its pipeline once (its model
  stays loaded) and compresses micro-batches with the same code as the local engine. When the
  cluster has GPUs, actors ask for one (or ``gpus_per_worker``) and load the model on it.
* The driver iterates the results in input order (``preserve_order``) and writes them with
  ragpress's writers, so the output file, its checkpoints and ``--resume`` are the same as the
  local engine's, and so is every record.

With ``--cache redis://...`` every actor talks to the same Redis, so a document one actor has
analysed is a cache hit for all the others (and for later runs).
"""

from __future__ import annotations

import pickle
import time
import warnings
from typing import TYPE_CHECKING, Any

import anyio.from_thread

from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.middleware.batch.runner import BatchReport, micro_batches, process_batch

try:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "ray", extra="ray") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ragpress.middleware.batch.io import RecordSource
    from ragpress.middleware.batch.pool import PipelineFactory
    from ragpress.types import CompressionOptions

__all__ = ["run_ray"]

_BATCHES_PER_BLOCK = 4
_READ_CPUS = 0


class _MicroBatchSource(Datasource):
    """Streams the input as blocks of pickled micro-batches: one row per micro-batch."""

    def __init__(
        self,
        source: RecordSource,
        batch_size: int,
        skip: Callable[[str], bool] | None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._source = source
        self._batch_size = batch_size
        self._skip = skip

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        source, batch_size, skip = self._source, self._batch_size, self._skip

        def read() -> Iterator[pa.Table]:
            rows: list[bytes] = []
            for batch in micro_batches(source.records(), batch_size, skip=skip):
                rows.append(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                if len(rows) == _BATCHES_PER_BLOCK:
                    yield pa.table({"batch": pa.array(rows, pa.large_binary())})
                    rows = []
            if rows:
                yield pa.table({"batch": pa.array(rows, pa.large_binary())})

        metadata = BlockMetadata(
            num_rows=None, size_bytes=None, input_files=(source.path,), exec_stats=None
        )
        return [ReadTask(read, metadata)]


class _CompressActor:
    """Holds one pipeline (its model loaded once) and compresses micro-batches."""

    def __init__(
        self,
        factory: PipelineFactory,
        options: CompressionOptions | None,
        device: str | None,
    ) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._pipeline = factory(device=device)
        self._options = options

    def __call__(self, block: pa.Table) -> pa.Table:
        payloads = []
        for raw in block.column("batch").to_pylist():
            report = BatchReport()
            records = self._portal.call(
                process_batch, pickle.loads(raw), self._pipeline, self._options, report
            )
            payloads.append(pickle.dumps((records, report), protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table({"result": pa.array(payloads, pa.large_binary())})


def run_ray(
    source: RecordSource,
    factory: PipelineFactory,
    write: Callable[[dict[str, Any]], None],
    *,
    options: CompressionOptions | None = None,
    workers: int = 1,
    batch_size: int = 16,
    skip: Callable[[str], bool] | None = None,
    skipped: int = 0,
    on_progress: Callable[[int], None] | None = None,
    address: str | None = None,
    gpus_per_worker: float | None = None,
) -> BatchReport:
    """Compress every record with ``workers`` Ray actors, writing output in input order.

    Args:
        source: The input (a file; Ray cannot read standard input).
        factory: Builds each actor's pipeline (cloudpickled to the actors).
        write: Receives each output record, in input order, in this (driver) process.
        options: Budget for every record.
        workers: Actors (model replicas).
        batch_size: Records per micro-batch.
        skip: Returns true for record keys already done (``--resume``).
        skipped: How many records ``skip`` will skip (for the report).
        on_progress: Called with the number of records finished since the last call.
        address: Ray cluster to join; ``None`` joins ``RAY_ADDRESS`` or starts a local Ray.
        gpus_per_worker: GPUs per actor; ``None``: 1 when the cluster has GPUs, else 0.

    Returns:
        Totals for the run.
    """
    if source.path == "-":
        raise ConfigurationError("--engine ray reads files, not standard input; give a path")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    if gpus_per_worker is None:
        gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    report = BatchReport(skipped=skipped)
    if on_progress is not None and skipped:
        on_progress(skipped)
    started = time.perf_counter()
    dataset = ray.data.read_datasource(
        _MicroBatchSource(source, batch_size, skip),
        override_num_blocks=1,
        # Reading is light: it takes no CPU slot, so N actors fit on N CPUs. Resources unlike
        # the actors' also keep Ray from fusing the read into the actor stage, where the one
        # read task would feed a single actor.
        num_cpus=_READ_CPUS,
    ).map_batches(
        _CompressActor,
        fn_constructor_kwargs={
            "factory": factory,
            "options": options,
            "device": "cuda" if gpus_per_worker > 0 else None,
        },
        batch_size=None,
        batch_format="pyarrow",
        concurrency=workers,
        num_gpus=gpus_per_worker or None,
    )
    with warnings.catch_warnings():
        # Ray warns when an input has fewer blocks than actors; the output is the same.
        warnings.filterwarnings("ignore", "The minimum number of concurrent actors")
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for raw in block.column("result").to_pylist():
                records, part = pickle.loads(raw)
                for record in records:
                    write(record)
                report.merge(part)
                if on_progress is not None and records:
                    on_progress(len(records))
    report.seconds = time.perf_counter() - started
    return report
