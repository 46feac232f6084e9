"""Batch throughput and memory: records/s and tokens/s against workers and micro-batch size.

Every configuration runs in a fresh subprocess (so peak RSS is its own), side by side in one
invocation; compare rows of one run, never absolute numbers across machines or runs.
Throughput is the steady state, from the first finished micro-batch to the last, so worker
start-up and model loading are left out (the wall time with them is shown too); on Ray, which
hands results over in bursts, it is records over wall time, Ray's start-up included. Peak RSS
counts this process and its children: Ray's actors belong to Ray's own processes and are not in
it.

Pipelines:
  echo     returns the documents unchanged: the cost of the framework alone (read, parse,
           micro-batch, ship to workers, write); what memory flatness is measured on.
  hashing  sentence selection with a hashing bag-of-words embedder: the real compressor,
           no neural model.
  minilm   sentence selection with the real all-MiniLM-L6-v2 (realistic numbers).

Usage:
  python bench/batch.py                      # the default suite (a few minutes on 2 cores)
  python bench/batch.py --memory 200000      # + peak RSS on a 200k-record corpus vs 20k
  python bench/batch.py --engine ray         # the throughput rows on a local Ray instead
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import numpy.typing as npt

    from ragpress.middleware.pipeline.core import Pipeline, PipelineRequest
    from ragpress.types import CompressionOptions, CompressionResult, Passage

WORDS = [
    "river",
    "tower",
    "bread",
    "physics",
    "prize",
    "city",
    "museum",
    "history",
    "engine",
    "protein",
    "novel",
    "season",
    "market",
    "island",
    "theory",
    "winter",
    "harbour",
    "festival",
    "library",
    "language",
]


def write_corpus(path: Path, records: int, seed: int = 0) -> None:
    """Synthetic NQ-like records: a question and five passages of four to eight sentences."""
    rng = random.Random(seed)
    with gzip.open(path, "wt", compresslevel=1) as handle:
        for i in range(records):
            docs = []
            for d in range(5):
                sentences = [
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize()
                    + "."
                    for _ in range(rng.randint(4, 8))
                ]
                docs.append(
                    {"title": f"{rng.choice(WORDS).title()} {d}", "text": " ".join(sentences)}
                )
            question = "what is the " + " ".join(rng.choice(WORDS) for _ in range(4))
            handle.write(json.dumps({"id": f"r{i}", "question": question, "docs": docs}) + "\n")


class FastHashingEmbedder:
    """Bag-of-words vectors from hashed words: deterministic, no model, numpy only."""

    def __init__(self, dimension: int = 128) -> None:
        self.dimension = dimension
        self.fingerprint = f"bench-hashing-{dimension}"

    def embed(
        self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage"
    ) -> npt.NDArray[np.float32]:
        import numpy as np

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.md5(word.encode(), usedforsecurity=False).digest()
                out[row, int.from_bytes(digest[:4], "little") % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = out / np.maximum(norms, 1e-12)
        return unit


class EchoPipeline:
    """Keeps every document whole; the framework's cost with no compression at all."""

    async def acompress(
        self,
        query: str | None,
        passages: Sequence[Passage] = (),
        options: CompressionOptions | None = None,
    ) -> CompressionResult:
        return self._echo(passages)

    async def acompress_many(
        self, requests: Sequence[PipelineRequest]
    ) -> list[CompressionResult | Exception]:
        return [self._echo(r.passages) for r in requests]

    async def aclose(self) -> None:
        pass

    @staticmethod
    def _echo(passages: Sequence[Passage]) -> CompressionResult:
        from ragpress.types import CompressedPassage, CompressionResult

        n = sum(len(p.text) // 4 for p in passages)  # a rough token count; no tokenizer cost
        return CompressionResult(
            passages=tuple(
                CompressedPassage(p, p.text, ((0, len(p.text)),), 1, 1) for p in passages
            ),
            method="echo",
            tokens_before=n,
            tokens_after=n,
        )


@dataclass(frozen=True)
class BenchFactory:
    """Picklable: worker processes rebuild the pipeline from the name."""

    pipeline: str

    def __call__(self, *, device: str | None = None) -> Pipeline:
        if self.pipeline == "echo":
            # duck-typed: the batch workers only call acompress_many and aclose
            return cast("Pipeline", EchoPipeline())
        from ragpress.config import RagpressSettings
        from ragpress.middleware.pipeline.factory import build_pipeline

        settings = RagpressSettings(_env_file=None, cache={"backend": "memory"})
        if self.pipeline == "hashing":
            return build_pipeline(settings, embedder=FastHashingEmbedder())
        return build_pipeline(settings)  # the embedded all-MiniLM-L6-v2


def one(args: argparse.Namespace) -> None:
    """Run one configuration in this process and print one JSON line."""
    import threading
    import time

    from ragpress.middleware.batch.job import BatchJob, run_job

    samples: list[int] = []
    stop = threading.Event()

    def rss_bytes() -> int:
        """This process plus its worker processes, from /proc (Linux)."""
        total = 0
        pids = [os.getpid()]
        children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(match.group(1)) * 1024 if match else 0
        return total

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append(rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as folder:
        target = str(Path(folder) / f"out{args.output_suffix}")
        started = time.perf_counter()
        marks: list[tuple[float, int]] = []  # (time, records done) at each progress call
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            marks.append((time.perf_counter(), done))

        report = run_job(
            BatchJob(
                args.corpus,
                target,
                workers=args.workers,
                batch_size=args.batch_size,
                engine=args.engine,
            ),
            BenchFactory(args.pipeline),
            on_progress=progress,
        )
        wall = time.perf_counter() - started
    # Steady state: from the first finished micro-batch to the last (model loads excluded).
    (t0, n0), (t1, n1) = (marks[0], marks[-1]) if marks else ((0.0, 0), (0.0, 0))
    steady = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
    if args.engine == "ray":  # Ray hands results over in bursts: only the wall time is fair
        steady = report.records / wall
    tokens_per_record = report.tokens_before / max(report.records, 1)
    stop.set()
    sampler.join()
    # Memory flatness: the RSS at the end of the run against the RSS a tenth of the way in.
    tenth = samples[len(samples) // 10] if samples else 0
    print(
        json.dumps(
            {
                "pipeline": args.pipeline,
                "engine": args.engine,
                "output": args.output_suffix,
                "workers": args.workers,
                "batch_size": args.batch_size,
                "records": report.records,
                "records_per_s": round(steady, 1),
                "tokens_per_s": round(steady * tokens_per_record),
                "wall_s": round(wall, 1),
                "peak_rss_mb": round(max([*samples, rss_bytes()]) / 2**20, 1),
                "rss_at_10pct_mb": round(tenth / 2**20, 1),
                "rss_at_end_mb": round((samples[-1] if samples else 0) / 2**20, 1),
                "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def run(corpus: Path, **config: object) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", "--corpus", str(corpus)]
    for key, value in config.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"{row['pipeline']:8} {row['engine']:5} {row['output']:9} workers={row['workers']} "
        f"batch={row['batch_size']:<3} records={row['records']:>7,}  "
        f"{row['records_per_s']:>8,.1f} rec/s  {row['tokens_per_s']:>10,} tok/s  "
        f"(wall {row['wall_s']:>6.1f} s with start-up)  "
        f"peak RSS {row['peak_rss_mb']:>7.1f} MB (10%: {row['rss_at_10pct_mb']:.1f}, "
        f"end: {row['rss_at_end_mb']:.1f})",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default="echo", choices=["echo", "hashing", "minilm"])
    parser.add_argument("--engine", default="local", choices=["local", "ray"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output-suffix", default=".jsonl.gz")
    parser.add_argument("--memory", type=int, default=0, metavar="N",
                        help="also compare peak RSS on an N-record corpus with N/10")  # fmt: skip
    parser.add_argument("--minilm-records", type=int, default=300)
    parser.add_argument("--hashing-records", type=int, default=3000)
    parser.add_argument("--framework-records", type=int, default=20000)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    engine = args.engine  # --engine ray runs the throughput rows on a local Ray
    with tempfile.TemporaryDirectory() as folder:
        corpora: dict[int, Path] = {}

        def corpus(n: int) -> Path:
            if n not in corpora:
                corpora[n] = Path(folder) / f"corpus-{n}.jsonl.gz"
                write_corpus(corpora[n], n)
            return corpora[n]

        print(f"cores: {os.cpu_count()}; each row is a fresh process\n")
        print("framework (echo pipeline): workers")
        for workers in (1, 2, 4):
            run(corpus(args.framework_records), pipeline="echo", workers=workers, engine=engine)
        print("\nsentence selection, hashing embedder: workers")
        for workers in (1, 2):
            run(corpus(args.hashing_records), pipeline="hashing", workers=workers, engine=engine)
        print("\nsentence selection, all-MiniLM-L6-v2: micro-batch size and workers")
        for workers, batch_size in ((1, 1), (1, 16), (2, 16)):
            run(corpus(args.minilm_records), pipeline="minilm", workers=workers,
                batch_size=batch_size, engine=engine)  # fmt: skip
        if args.memory:
            print(f"\nmemory flatness (echo pipeline): {args.memory // 10:,} vs {args.memory:,}")
            for n in (args.memory // 10, args.memory):
                for suffix in (".jsonl.gz", ".parquet"):
                    run(corpus(n), pipeline="echo", workers=2, output_suffix=suffix)


if __name__ == "__main__":
    main()
