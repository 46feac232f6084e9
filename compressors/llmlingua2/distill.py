"""Data distillation for LLMLingua-2: a teacher LLM compresses, word labels follow, a model learns.

The recipe of the paper (Pan et al., 2024, arXiv 2403.12968, §3):

1. cut the source texts into chunks of at most 512 cl100k tokens, at sentence or line ends;
2. ask a teacher LLM (any OpenAI-compatible endpoint) to compress each chunk by deleting words
   only, with the paper's instruction, at temperature 0.3;
3. align each (original, compressed) pair to label every original word keep or drop
   (:mod:`ragpress.compressors.llmlingua2.labels`);
4. drop the pairs with the highest variation rate and alignment gap (the teacher rewrote
   instead of deleting);
5. fine-tune a token classifier (:mod:`ragpress.compressors.llmlingua2.training`).

Labelled pairs are appended to a JSONL file as they arrive, so a run that stops (network,
Ctrl-C) resumes without asking the teacher again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragpress.compressors.llmlingua2.labels import DEFAULT_WINDOW, align_words
from ragpress.exceptions import ConfigurationError, UpstreamError
from ragpress.segmentation import split_sentences
from ragpress.tokens import get_token_counter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ragpress.compressors.llmlingua2.training import LabelledText

__all__ = [
    "PAPER_INSTRUCTION",
    "DistilledPair",
    "OpenAITeacher",
    "chunk_for_teacher",
    "distill_pairs",
    "filter_pairs",
    "read_pairs",
]

# The compression instruction of the LLMLingua-2 paper (Figure 1), with the text slot.
PAPER_INSTRUCTION = (
    "Compress the given text to short expressions, and such that you (GPT-4) can reconstruct "
    "it as close as possible to the original. Unlike the usual text compression, I need you "
    "to comply with the 5 conditions below:\n"
    "1. You can ONLY remove unimportant words.\n"
    "2. Do not reorder the original words.\n"
    "3. Do not change the original words.\n"
    "4. Do not use abbreviations or emojis.\n"
    "5. Do not add new words or symbols.\n"
    "Compress the origin aggressively by removing words only. Compress the origin as short as "
    "you can, while retaining as much information as possible. If you understand, please "
    "compress the following text: {text}\n"
    "The compressed text is:"
)
DEFAULT_CHUNK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class DistilledPair:
    """One labelled chunk, as stored in the distillation JSONL."""

    key: str
    """Hash of the original chunk (resume key)."""
    original: str
    compressed: str
    spans: tuple[tuple[int, int], ...]
    labels: tuple[int, ...]
    variation_rate: float
    alignment_gap: float

    def to_json(self) -> str:
        """One JSONL line."""
        return json.dumps(asdict(self), ensure_ascii=False)

    def labelled(self) -> LabelledText:
        """The training example."""
        from ragpress.compressors.llmlingua2.training import LabelledText

        return LabelledText(self.original, self.spans, self.labels)

    @classmethod
    def from_pair(
        cls, original: str, compressed: str, *, window: int = DEFAULT_WINDOW
    ) -> DistilledPair:
        """Align a pair and label the original's words."""
        alignment = align_words(original, compressed, window=window)
        return cls(
            key=_key(original),
            original=original,
            compressed=compressed,
            spans=alignment.spans,
            labels=alignment.labels,
            variation_rate=alignment.variation_rate,
            alignment_gap=alignment.alignment_gap,
        )


class OpenAITeacher:
    """A teacher LLM behind any OpenAI-compatible chat-completions endpoint.

    Args:
        model: The model name the endpoint serves.
        base_url: e.g. ``https://api.openai.com/v1`` or a local vLLM server.
        api_key: The endpoint's key (``None``: the openai client's own lookup).
        instruction: Prompt with a ``{text}`` slot; the paper's by default.
        temperature: The paper uses 0.3.
        timeout_seconds: Per request.
        max_retries: Retries of the openai client (with its backoff).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        instruction: str = PAPER_INSTRUCTION,
        temperature: float = 0.3,
        timeout_seconds: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        if "{text}" not in instruction:
            raise ConfigurationError("the teacher instruction needs a {text} slot for the chunk")
        try:
            import openai
        except ImportError as exc:
            from ragpress.exceptions import MissingDependencyError

            raise MissingDependencyError("openai", extra="distill") from exc
        self._openai = openai
        self.model = model
        self.instruction = instruction
        self.temperature = temperature
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            timeout=timeout_seconds,
            max_retries=max_retries,
        )

    def compress(self, text: str) -> str:
        """The teacher's compression of ``text``.

        Raises:
            UpstreamError: The endpoint failed or answered with no text.
        """
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": self.instruction.replace("{text}", text)}],
                temperature=self.temperature,
            )
        except self._openai.APIStatusError as exc:
            raise UpstreamError(
                f"teacher {self.model!r} answered HTTP {exc.status_code}: {exc.message}",
                status_code=exc.status_code,
            ) from exc
        except self._openai.APIError as exc:
            raise UpstreamError(f"teacher {self.model!r} failed: {exc}") from exc
        content = response.choices[0].message.content if response.choices else None
        if not content or not content.strip():
            raise UpstreamError(f"teacher {self.model!r} returned no text")
        return content.strip()

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


def chunk_for_teacher(text: str, max_tokens: int = DEFAULT_CHUNK_TOKENS) -> list[str]:
    """Cut ``text`` into chunks of at most ``max_tokens`` cl100k tokens at sentence ends."""
    counter = get_token_counter("cl100k_base")
    spans = split_sentences(text) or ([(0, len(text))] if text.strip() else [])
    sizes = counter.count_many([text[s:e] for s, e in spans])
    chunks: list[str] = []
    start: int | None = None
    end = 0
    used = 0
    for (s, e), n in zip(spans, sizes, strict=True):
        if start is not None and used + n > max_tokens:
            chunks.append(text[start:end].strip())
            start, used = None, 0
        if start is None:
            start = s
        end, used = e, used + n
    if start is not None:
        chunks.append(text[start:end].strip())
    return [c for c in chunks if c]


def distill_pairs(
    texts: Iterable[str],
    teacher: OpenAITeacher,
    store: str | Path,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    on_pair: Callable[[DistilledPair], None] | None = None,
) -> list[DistilledPair]:
    """Compress every chunk of ``texts`` with the teacher and label it; append to ``store``.

    Chunks already in ``store`` (by content hash) are not sent again, so the call resumes.

    Returns:
        Every pair in ``store`` afterwards (old and new), unfiltered.
    """
    path = Path(store)
    pairs = {p.key: p for p in read_pairs(path)} if path.exists() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for text in texts:
            for chunk in chunk_for_teacher(text, chunk_tokens):
                key = _key(chunk)
                if key in pairs:
                    continue
                pair = DistilledPair.from_pair(chunk, teacher.compress(chunk))
                handle.write(pair.to_json() + "\n")
                handle.flush()
                pairs[key] = pair
                if on_pair is not None:
                    on_pair(pair)
    return list(pairs.values())


def read_pairs(path: str | Path) -> list[DistilledPair]:
    """Pairs from a distillation JSONL, or from any JSONL of ``{"original", "compressed"}``.

    A line cut short by a crash (the last one) is skipped.
    """
    out: list[DistilledPair] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ConfigurationError(f"{path}:{number} is not JSON ({exc.msg})") from exc
        if "labels" in record:
            out.append(
                DistilledPair(
                    key=record["key"],
                    original=record["original"],
                    compressed=record["compressed"],
                    spans=tuple((int(s), int(e)) for s, e in record["spans"]),
                    labels=tuple(int(x) for x in record["labels"]),
                    variation_rate=float(record["variation_rate"]),
                    alignment_gap=float(record["alignment_gap"]),
                )
            )
        elif isinstance(record.get("original"), str) and isinstance(record.get("compressed"), str):
            out.append(DistilledPair.from_pair(record["original"], record["compressed"]))
        else:
            raise ConfigurationError(
                f"{path}:{number} needs string fields 'original' and 'compressed'"
            )
    return out


def filter_pairs(
    pairs: Sequence[DistilledPair],
    *,
    variation_quantile: float = 0.1,
    gap_quantile: float = 0.1,
) -> list[DistilledPair]:
    """Drop the worst pairs (the teacher rewrote instead of deleting).

    Removes any pair whose labels are all one value, then the top ``variation_quantile`` by
    variation rate, then the top ``gap_quantile`` by alignment gap.
    """
    usable = [p for p in pairs if p.labels and 0 < sum(p.labels) < len(p.labels)]
    for quantile, attribute in (
        (variation_quantile, "variation_rate"),
        (gap_quantile, "alignment_gap"),
    ):
        drop = int(len(usable) * quantile)
        if drop:
            worst = sorted(usable, key=lambda p: getattr(p, attribute), reverse=True)[:drop]
            gone = {id(p) for p in worst if getattr(p, attribute) > 0}
            usable = [p for p in usable if id(p) not in gone]
    return usable


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
