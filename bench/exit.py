"""EXIT scoring speed: one prompt at a time (the reference code) vs shared-prefix batches.

Both scorers run on the same model, the same prompts and the same thread count, alternately, in
one process; the script prints the median time of each per request, the ratio, and the largest
difference between their P(Yes) scores (it must stay below 1e-4). Requests are the 10-document
records of ``tests/fixtures/nq_sample.jsonl.gz`` (about 60 sentences each).

The model is the tiny random Gemma the tests build (``tests/support/exit_tiny.py``);
``--size small`` builds a wider, deeper one where the matrix work weighs more than the
per-call overhead.

    .venv/bin/python bench/exit.py
    .venv/bin/python bench/exit.py --size small --context all --records 5
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from ragpress.compressors.exit.compressor import ExitCompressor  # noqa: E402
from ragpress.compressors.exit.model import ExitClassifier  # noqa: E402
from ragpress.compressors.exit.scoring import common_prefix_length  # noqa: E402
from ragpress.types import Passage  # noqa: E402
from tests.support.exit_tiny import save_tiny_gemma  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
SIZES = {"tiny": {"hidden_size": 64, "layers": 2}, "small": {"hidden_size": 256, "layers": 6}}


def records(path: Path, limit: int) -> list[tuple[str, list[Passage]]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:limit]
    return [
        (r["question"], [Passage(d["text"], title=d.get("title")) for d in r["docs"]]) for r in rows
    ]


def timed(function: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--context", choices=["document", "all"], default="document")
    parser.add_argument("--records", type=int, default=5, help="requests to time")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per request")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data", type=Path, default=ROOT / "tests/fixtures/nq_sample.jsonl.gz")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        model_dir = save_tiny_gemma(Path(folder), **SIZES[args.size])
        classifier = ExitClassifier.from_pretrained(str(model_dir))
    compressor = ExitCompressor(classifier, context=args.context)
    print(
        f"model: {args.size} Gemma ({SIZES[args.size]}), context={args.context}, "
        f"threads={args.threads}, device=cpu, dtype=float32"
    )
    print(
        "request  sentences  tokens one-by-one  tokens shared  token bound  "
        "one-by-one ms  batched ms  speedup  max |diff|"
    )
    ratios, worst = [], 0.0
    for number, (query, passages) in enumerate(records(args.data, args.records), start=1):
        _, groups = timed(compressor.prompts, query, passages)
        classifier.score(groups)  # warm-up
        naive_times, fast_times = [], []
        for _ in range(args.repeat):
            t_naive, naive = timed(classifier.score_one_by_one, groups)
            t_fast, fast = timed(classifier.score, groups)
            naive_times.append(t_naive)
            fast_times.append(t_fast)
        diff = max(
            abs(a - b)
            for ga, gb in zip(naive, fast, strict=True)
            for a, b in zip(ga, gb, strict=True)
        )
        worst = max(worst, diff)
        n_naive, n_fast = statistics.median(naive_times), statistics.median(fast_times)
        ratios.append(n_naive / n_fast)
        sentences = sum(len(g.ids) for g in groups)
        tokens = sum(len(ids) for g in groups for ids in g.ids)
        # Tokens the shared-prefix scorer runs: each prefix once, plus every suffix.
        shared = sum(
            common_prefix_length(g.ids) * (1 - len(g.ids)) + sum(map(len, g.ids)) for g in groups
        )
        print(
            f"{number:>7}  {sentences:>9}  {tokens:>17}  {shared:>13}  {tokens / shared:>10.1f}x  "
            f"{n_naive * 1e3:>13.1f}  {n_fast * 1e3:>10.1f}  {n_naive / n_fast:>6.1f}x  {diff:.1e}"
        )
    print(
        f"median speedup {statistics.median(ratios):.1f}x (min {min(ratios):.1f}x); "
        f"largest score difference {worst:.1e} (must be < 1e-4)"
    )
    if worst >= 1e-4:
        raise SystemExit("scores differ by 1e-4 or more")


if __name__ == "__main__":
    main()
