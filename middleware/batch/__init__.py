"""Batch compression of corpora: JSONL or Parquet in, one output record per input record.

* :mod:`~ragpress.middleware.batch.records` — the record format: parsing, output and error
  records;
* :mod:`~ragpress.middleware.batch.runner` — :func:`run_batch`: concurrent micro-batches,
  written in input order, resumable;
* :mod:`~ragpress.middleware.batch.io`, :mod:`~ragpress.middleware.batch.jsonl` and
  :mod:`~ragpress.middleware.batch.parquet` — reading and writing each format;
* :mod:`~ragpress.middleware.batch.job` — :func:`run_job`, what ``ragpress batch`` calls, on
  one of the engines: in process, :mod:`~ragpress.middleware.batch.pool` (local worker
  processes) or :mod:`~ragpress.middleware.batch.ray` (Ray Data).
"""

from __future__ import annotations

__all__: list[str] = []
