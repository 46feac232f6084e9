"""Training data for the EXIT classifier, sampled the way the paper sampled it (pure Python).

EXIT was trained on HotpotQA, whose questions come with *supporting facts*: the sentences
that answer them. Each training example is (query, context = the sentence's own paragraph as
``"{title}\\n{text}"``, sentence, label):

* **positives**: supporting sentences;
* **hard negatives**: the other sentences of the supporting paragraphs;
* **random negatives**: sentences of distractor paragraphs (``"distractors"``, the default), or,
  as the authors' current code does, sentences of another question's paragraphs paired with
  this question (``"other_queries"``);

mixed 2:1:1, so half the examples are positives; when one kind is scarce, all three are cut
together rather than repeating examples.

Two input formats are read (JSON array, JSONL, optionally gzip-compressed):

* **HotpotQA**: ``{"question", "context": [[title, [sentence, ...]], ...],
  "supporting_facts": [[title, sentence index], ...]}``;
* **ragpress records** (what ``ragpress batch`` reads): ``{"question", "answers", "docs": [{"title",
  "text", "is_gold", "supporting_sentences"}]}``. ``supporting_sentences`` lists indices into the
  sentences ragpress's splitter finds in ``text``. Without it, a gold document's positives are
  *weak labels*: its sentences that contain an answer string, or else the one sentence sharing
  most words with the question. Records labelled that way are counted in the statistics.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragpress.compressors.exit.prompt import document_context
from ragpress.exceptions import RequestValidationError
from ragpress.segmentation import split_sentences

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "ExampleKind",
    "ExitDataset",
    "ExitExample",
    "Paragraph",
    "QARecord",
    "RandomNegatives",
    "build_examples",
    "parse_qa_record",
    "read_qa_records",
]

ExampleKind = Literal["positive", "hard_negative", "random_negative"]
RandomNegatives = Literal["distractors", "other_queries"]
_WORD = re.compile(r"\w+", re.UNICODE)
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Paragraph:
    """One paragraph of a QA record, split into sentences."""

    title: str
    text: str
    sentences: tuple[str, ...]
    supporting: frozenset[int]
    """Indices of the sentences that support the answer."""
    gold: bool
    """Whether the paragraph is a supporting one."""


@dataclass(frozen=True, slots=True)
class QARecord:
    """A question with its paragraphs and supporting sentences."""

    id: str
    question: str
    paragraphs: tuple[Paragraph, ...]
    weak_labels: bool = False
    """Positives were inferred from answer strings, not given."""


@dataclass(frozen=True, slots=True)
class ExitExample:
    """One classifier training example."""

    query: str
    context: str
    sentence: str
    label: bool
    """``True``: the answer is "Yes"."""
    kind: ExampleKind
    record_id: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for ``--dump-data``)."""
        return asdict(self)


@dataclass(frozen=True)
class ExitDataset:
    """Sampled examples and what went into them."""

    examples: list[ExitExample]
    counts: dict[str, int] = field(default_factory=dict)
    """Examples per kind."""
    records: int = 0
    """Records that contributed candidates."""
    weak_label_records: int = 0
    """Records whose positives were inferred from answer strings."""


def read_qa_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line or index, record)`` from a JSON array or JSONL file, gzip-compressed or not.

    Raises:
        RequestValidationError: The file is not valid JSON / JSONL of objects.
    """
    file = Path(path)
    raw = file.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}); give a JSON array or "
                "one JSON object per line",
                param=str(file),
            ) from exc
        yield from enumerate(rows, start=1)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                f"{file} line {number}: not valid JSON ({exc.msg}); each line must be one "
                "record object",
                param=f"{file}:{number}",
            ) from exc


def parse_qa_record(raw: Any, where: str, *, language: str = "en") -> QARecord:
    """Read one HotpotQA-style or ragpress-style record.

    Args:
        raw: The decoded JSON value.
        where: ``"file:line"``, for error messages.
        language: Sentence-splitting language for ragpress-style documents.

    Raises:
        RequestValidationError: A required field is missing or has the wrong type.
    """
    if not isinstance(raw, dict):
        raise RequestValidationError(f"{where}: a record must be a JSON object", param=where)
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RequestValidationError(
            f"{where}: 'question' must be a non-empty string", param=f"{where}.question"
        )
    record_id = str(raw.get("_id", raw.get("id", where)))
    if "supporting_facts" in raw and "context" in raw:
        return QARecord(record_id, question.strip(), _hotpot_paragraphs(raw, where))
    docs = raw.get("docs")
    if not isinstance(docs, list):
        raise RequestValidationError(
            f"{where}: needs 'docs' (ragpress records) or 'context' and 'supporting_facts' "
            "(HotpotQA)",
            param=f"{where}.docs",
        )
    answers = [a for a in raw.get("answers") or [] if isinstance(a, str) and a.strip()]
    paragraphs, weak = _doc_paragraphs(docs, question, answers, where, language)
    return QARecord(record_id, question.strip(), paragraphs, weak_labels=weak)


def build_examples(
    records: Sequence[QARecord],
    *,
    seed: int = 42,
    random_negatives: RandomNegatives = "distractors",
) -> ExitDataset:
    """Sample positives, hard negatives and random negatives 2:1:1.

    Raises:
        RequestValidationError: Too few positives or negatives of some kind to sample any.
    """
    positives: list[ExitExample] = []
    hard: list[ExitExample] = []
    distractors: list[ExitExample] = []
    contributing = 0
    for record in records:
        before = len(positives) + len(hard) + len(distractors)
        for paragraph in record.paragraphs:
            context = document_context(paragraph.title, paragraph.text)
            for k, sentence in enumerate(paragraph.sentences):
                kind: ExampleKind
                if k in paragraph.supporting:
                    pool, kind, label = positives, "positive", True
                elif paragraph.gold:
                    pool, kind, label = hard, "hard_negative", False
                else:
                    pool, kind, label = distractors, "random_negative", False
                pool.append(ExitExample(record.question, context, sentence, label, kind, record.id))
        contributing += len(positives) + len(hard) + len(distractors) > before
    rng = random.Random(seed)
    for pool in (positives, hard, distractors):
        rng.shuffle(pool)
    randoms = (
        distractors if random_negatives == "distractors" else [*positives, *hard, *distractors]
    )
    n = min(len(positives) // 2, len(hard), len(randoms))
    if n == 0:
        raise RequestValidationError(
            f"cannot sample EXIT examples 2:1:1 from {len(records)} records: {len(positives)} "
            f"positives, {len(hard)} hard negatives, {len(randoms)} random-negative candidates; "
            "give more records with supporting sentences and distractor paragraphs",
            param="data",
        )
    chosen = positives[: 2 * n] + hard[:n]
    if random_negatives == "distractors":
        chosen += distractors[:n]
    else:
        chosen += _other_query_negatives(chosen[: 2 * n], randoms, n, rng)
    rng.shuffle(chosen)
    counts = {"positive": 2 * n, "hard_negative": n, "random_negative": n}
    weak = sum(r.weak_labels for r in records)
    return ExitDataset(chosen, counts, contributing, weak)


def _other_query_negatives(
    targets: Sequence[ExitExample], pool: Sequence[ExitExample], n: int, rng: random.Random
) -> list[ExitExample]:
    """Sentences (with their paragraphs) of other questions, paired with a target's question."""
    out: list[ExitExample] = []
    for target in rng.sample(list(targets), n):
        others = [e for e in pool if e.record_id != target.record_id]
        if not others:
            raise RequestValidationError(
                "random_negatives='other_queries' needs at least two records", param="data"
            )
        source = rng.choice(others)
        out.append(
            ExitExample(
                target.query,
                source.context,
                source.sentence,
                False,
                "random_negative",
                target.record_id,
            )
        )
    return out


def _hotpot_paragraphs(raw: dict[str, Any], where: str) -> tuple[Paragraph, ...]:
    facts: dict[str, set[int]] = {}
    for fact in raw["supporting_facts"]:
        if not (isinstance(fact, list | tuple) and len(fact) == 2 and isinstance(fact[1], int)):
            raise RequestValidationError(
                f"{where}: supporting_facts entries must be [title, sentence index], got {fact!r}",
                param=f"{where}.supporting_facts",
            )
        facts.setdefault(str(fact[0]), set()).add(fact[1])
    paragraphs = []
    for entry in raw["context"]:
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[1], list)):
            raise RequestValidationError(
                f"{where}: context entries must be [title, [sentence, ...]], got {entry!r:.80}",
                param=f"{where}.context",
            )
        title, raw_sentences = str(entry[0]), [str(s) for s in entry[1]]
        kept = [(i, s.strip()) for i, s in enumerate(raw_sentences) if s.strip()]
        supporting = facts.get(title, set())
        paragraphs.append(
            Paragraph(
                title=title,
                text=" ".join(s for _, s in kept),
                sentences=tuple(s for _, s in kept),
                supporting=frozenset(j for j, (i, _) in enumerate(kept) if i in supporting),
                gold=title in facts,
            )
        )
    return tuple(paragraphs)


def _doc_paragraphs(
    docs: list[Any], question: str, answers: list[str], where: str, language: str
) -> tuple[tuple[Paragraph, ...], bool]:
    paragraphs = []
    weak = False
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise RequestValidationError(
                f"{where}: docs[{i}] must be an object with a 'text' string",
                param=f"{where}.docs[{i}].text",
            )
        text = doc["text"]
        sentences = tuple(text[s:e] for s, e in split_sentences(text, language=language))
        given = doc.get("supporting_sentences")
        gold = bool(doc.get("is_gold")) or bool(given)
        if given is not None:
            if not (isinstance(given, list) and all(isinstance(k, int) for k in given)):
                raise RequestValidationError(
                    f"{where}: docs[{i}].supporting_sentences must be a list of sentence indices",
                    param=f"{where}.docs[{i}].supporting_sentences",
                )
            supporting = frozenset(k for k in given if 0 <= k < len(sentences))
        elif gold:
            supporting = _weak_positives(sentences, question, answers)
            weak = True
        else:
            supporting = frozenset()
        title = doc["title"] if isinstance(doc.get("title"), str) else ""
        paragraphs.append(Paragraph(title, text, sentences, supporting, gold))
    return tuple(paragraphs), weak


def _weak_positives(
    sentences: Sequence[str], question: str, answers: Sequence[str]
) -> frozenset[int]:
    """Sentences holding an answer string, or else the one sharing most question words."""
    needles = [_normalise(a) for a in answers if _normalise(a)]
    hits = {k for k, s in enumerate(sentences) if any(n in _normalise(s) for n in needles)}
    if hits:
        return frozenset(hits)
    question_words = _content_words(question)
    overlaps = [len(question_words & _content_words(s)) for s in sentences]
    if not overlaps or max(overlaps) == 0:
        return frozenset()
    return frozenset({overlaps.index(max(overlaps))})


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3}
