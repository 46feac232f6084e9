"""Core value types and the protocols every backend implements. No third-party imports.

Values are frozen dataclasses: a :class:`Passage` goes in, a :class:`CompressionResult` of
:class:`CompressedPassage` comes out, and the passage object itself rides along unchanged, so its
``title``, ``id`` and ``metadata`` survive every compressor by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from ragpress.exceptions import RequestValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "AUTO",
    "DEFAULT_AUTO_MAX_RATIO",
    "DEFAULT_AUTO_MIN_RATIO",
    "ArrayLike",
    "CompressedPassage",
    "CompressionOptions",
    "CompressionResult",
    "Embedder",
    "Passage",
    "Retriever",
    "SearchHit",
    "Span",
    "TextCompressor",
    "TokenCounter",
]

Span = tuple[int, int]
"""A half-open character range ``[start, end)`` of an original text."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return _EMPTY
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class Passage:
    """A unit of context: a retrieved chunk or a user-supplied document.

    Compressors never modify a passage; results point back to it, so ``title``, ``id`` and
    ``metadata`` come out exactly as they went in.
    """

    text: str
    """The content to compress."""
    title: str | None = None
    """Document title; some compressors use it as context, none rewrite it."""
    id: str | None = None
    """Caller's identifier, passed through."""
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False)
    """Free metadata, passed through untouched (stored read-only)."""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Passage.text must be str, not {type(self.text).__name__}")
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One retrieval result: the passage and its similarity to the query."""

    passage: Passage
    score: float
    """Higher is more similar (inner product of normalised vectors: cosine)."""


AUTO: Final = "auto"
"""``target_ratio=AUTO``: the compressor sizes each budget to the evidence it finds."""
DEFAULT_AUTO_MIN_RATIO = 2.0
"""With ``target_ratio="auto"``, the least compression (keep at most half) unless set."""
DEFAULT_AUTO_MAX_RATIO = 20.0
"""With ``target_ratio="auto"``, the most compression (keep at least a twentieth) unless set."""


@dataclass(frozen=True, slots=True)
class CompressionOptions:
    """Per-call budget and constraints. ``None`` means "use the configured default".

    Give at most one of ``target_ratio``, ``rate`` and ``target_tokens``.
    """

    target_ratio: float | Literal["auto"] | None = None
    """Original tokens / compressed tokens, at least 1 (3 keeps about a third); or ``"auto"``:
    the compressor keeps what its evidence needs, between ``min_ratio`` and ``max_ratio``
    (compressors that cannot adapt compress to ``min_ratio``)."""
    rate: float | None = None
    """Fraction of tokens to keep, in (0, 1] (the LLMLingua convention)."""
    target_tokens: int | None = None
    """Hard token budget for the whole request."""
    keep: tuple[str, ...] = ()
    """Strings that must survive verbatim (their sentence or words are always kept)."""
    min_ratio: float | None = None
    """With ``target_ratio="auto"``: the least compression (default 2: keep at most half)."""
    max_ratio: float | None = None
    """With ``target_ratio="auto"``: the most compression (default 20)."""

    def __post_init__(self) -> None:
        given = [
            n for n in ("target_ratio", "rate", "target_tokens") if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise RequestValidationError(
                f"give only one budget, not {' and '.join(given)}; target_ratio=3 keeps a third, "
                "rate=0.33 keeps a third, target_tokens=500 keeps at most 500 tokens",
                param=given[1],
            )
        if (
            self.target_ratio is not None
            and self.target_ratio != AUTO
            and not (
                isinstance(self.target_ratio, int | float)
                and math.isfinite(self.target_ratio)
                and self.target_ratio >= 1
            )
        ):
            raise RequestValidationError(
                f"target_ratio={self.target_ratio!r} must be a number >= 1 (original tokens / "
                'compressed tokens, e.g. 3) or "auto"; for a fraction to keep, use rate=0.3',
                param="target_ratio",
            )
        self._check_auto_bounds()
        if self.rate is not None and not (math.isfinite(self.rate) and 0 < self.rate <= 1):
            raise RequestValidationError(
                f"rate={self.rate} must be in (0, 1]: the fraction of tokens to keep, e.g. 0.33",
                param="rate",
            )
        if self.target_tokens is not None and (
            isinstance(self.target_tokens, bool)
            or not isinstance(self.target_tokens, int)
            or self.target_tokens < 0
        ):
            raise RequestValidationError(
                f"target_tokens={self.target_tokens!r} must be a whole number >= 0",
                param="target_tokens",
            )
        if isinstance(self.keep, str):
            raise RequestValidationError(
                f"keep must be a list of strings, not the string {self.keep!r}; "
                f"write keep=[{self.keep!r}]",
                param="keep",
            )
        keep = tuple(self.keep)
        for i, item in enumerate(keep):
            if not isinstance(item, str) or not item.strip():
                raise RequestValidationError(
                    f"keep[{i}]={item!r} must be a non-empty string", param=f"keep[{i}]"
                )
        object.__setattr__(self, "keep", keep)

    def _check_auto_bounds(self) -> None:
        for name in ("min_ratio", "max_ratio"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.target_ratio != AUTO:
                raise RequestValidationError(
                    f'{name} bounds target_ratio="auto" and cannot be used without it; set '
                    f'target_ratio="auto", or drop {name}',
                    param=name,
                )
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 1):
                raise RequestValidationError(
                    f"{name}={value!r} must be a number >= 1 (a compression ratio)", param=name
                )
        low, high = self.ratio_bounds
        if self.adaptive and low > high:
            raise RequestValidationError(
                f"min_ratio={low} is above max_ratio={high}; the auto budget needs "
                "min_ratio <= max_ratio",
                param="min_ratio",
            )

    @property
    def adaptive(self) -> bool:
        """Whether the budget is ``"auto"``: sized per request by the compressor."""
        return self.target_ratio == AUTO

    @property
    def ratio_bounds(self) -> tuple[float, float]:
        """``(min_ratio, max_ratio)`` of an auto budget, defaults filled in."""
        return (
            DEFAULT_AUTO_MIN_RATIO if self.min_ratio is None else float(self.min_ratio),
            DEFAULT_AUTO_MAX_RATIO if self.max_ratio is None else float(self.max_ratio),
        )

    def fixed(self) -> CompressionOptions:
        """These options with an auto budget replaced by its least compression (``min_ratio``).

        What a compressor that cannot size its budget to the evidence applies.
        """
        if not self.adaptive:
            return self
        return CompressionOptions(target_ratio=self.ratio_bounds[0], keep=self.keep)

    @property
    def has_budget(self) -> bool:
        """Whether any of the three budget fields is set."""
        return not (self.target_ratio is None and self.rate is None and self.target_tokens is None)

    def resolve(self, defaults: CompressionOptions) -> CompressionOptions:
        """Fill what this call left unset from ``defaults`` (the request overrides settings).

        The budget is taken as a whole: a request that sets ``rate`` does not inherit the
        default ``target_ratio``. ``keep`` strings from both are combined.
        """
        budget = self if self.has_budget else defaults
        keep = tuple(dict.fromkeys((*defaults.keep, *self.keep)))
        return CompressionOptions(
            target_ratio=budget.target_ratio,
            rate=budget.rate,
            target_tokens=budget.target_tokens,
            keep=keep,
            min_ratio=budget.min_ratio,
            max_ratio=budget.max_ratio,
        )

    def budget(self, total_tokens: int) -> int | None:
        """Tokens the whole request may keep, or ``None`` when no budget is set.

        An auto budget gives its ceiling here (``total_tokens / min_ratio``); compressors that
        adapt choose less, within :meth:`auto_bounds`.

        Args:
            total_tokens: Tokens of all passages before compression.
        """
        if self.target_tokens is not None:
            return self.target_tokens
        if self.adaptive:
            return round(total_tokens / self.ratio_bounds[0])
        if self.target_ratio is not None:
            assert not isinstance(self.target_ratio, str)
            return round(total_tokens / self.target_ratio)
        if self.rate is not None:
            return round(total_tokens * self.rate)
        return None

    def auto_bounds(self, total_tokens: int) -> tuple[int, int]:
        """``(fewest, most)`` tokens an auto budget may keep of ``total_tokens``."""
        low, high = self.ratio_bounds
        return (round(total_tokens / high), round(total_tokens / low))


class ArrayLike(Protocol):
    """Anything with a shape: numpy arrays and torch tensors both qualify."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Size of each dimension."""
        ...


@dataclass(frozen=True, slots=True)
class CompressedPassage:
    """One passage after compression, with the provenance needed to verify it."""

    source: Passage
    """The input passage, unchanged (title, id and metadata live here)."""
    text: str
    """The compressed text; ``""`` when nothing of the passage was kept."""
    spans: tuple[Span, ...] | None
    """Character spans of ``source.text`` that were kept, in order; ``text`` equals
    ``ragpress.provenance.join_spans(source.text, spans)``. ``None`` for compressors that
    rewrite rather than extract."""
    tokens_before: int
    tokens_after: int
    score: float | None = None
    """Relevance the compressor assigned to the passage as a whole, when it has one."""

    @property
    def title(self) -> str | None:
        """The source passage's title."""
        return self.source.title

    @property
    def id(self) -> str | None:
        """The source passage's id."""
        return self.source.id

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The source passage's metadata."""
        return self.source.metadata


@dataclass(frozen=True, slots=True)
class CompressionResult:
    """What a compressor or pipeline returns: one entry per input passage, in input order."""

    passages: tuple[CompressedPassage, ...]
    """One per input passage, same order; empty ones are kept, never dropped silently."""
    method: str
    """Registry name of the compressor, or ``a+b`` for a chain."""
    tokens_before: int
    """Sum of the passages' tokens before compression."""
    tokens_after: int
    """Sum of the passages' tokens after compression."""
    timings_ms: Mapping[str, float] = field(default_factory=lambda: _EMPTY, hash=False)
    """Milliseconds per stage (``analyze``, ``select``, ``cache_get``, ...)."""
    cache_hits: int = 0
    cache_misses: int = 0
    notes: tuple[str, ...] = ()
    """Things the caller should know, e.g. that no passage was relevant."""
    embeddings: ArrayLike | None = None
    """Set by compressors that emit soft embeddings instead of text."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "timings_ms", _frozen_mapping(self.timings_ms))

    @property
    def ratio(self) -> float:
        """Tokens before / tokens after (``inf`` when everything was dropped)."""
        if self.tokens_after == 0:
            return math.inf if self.tokens_before else 1.0
        return self.tokens_before / self.tokens_after

    def context(self, separator: str = "\n\n") -> str:
        """The compressed passages that kept anything, joined for a prompt."""
        return separator.join(p.text for p in self.passages if p.text)


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens the way one model's tokenizer does."""

    name: str
    """Encoding or tokenizer name, e.g. ``cl100k_base``; part of cache fingerprints."""

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        ...

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text (batched where the backend can)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors; shared by retrieval and sentence selection."""

    dimension: int
    fingerprint: str
    """Stable id of model and revision; changes whenever the vectors would."""

    def embed(
        self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage"
    ) -> ArrayLike:
        """Embed ``texts`` as a ``(len(texts), dimension)`` float32 array."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Finds the passages most similar to a query."""

    def search(self, query: str, k: int) -> list[SearchHit]:
        """The ``k`` best hits, best first."""
        ...


@runtime_checkable
class TextCompressor(Protocol):
    """Shrinks text passages for a query; implemented by every text compressor."""

    name: str

    def compress(
        self, query: str | None, passages: Sequence[Passage], options: CompressionOptions
    ) -> CompressionResult:
        """Compress ``passages`` for ``query`` (``None`` for query-agnostic compression)."""
        ...
