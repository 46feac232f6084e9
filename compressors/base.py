"""The base class every compressor derives from: configuration, fingerprint, cacheable analysis.

A compressor's work splits in two:

1. :meth:`BaseCompressor.analyze` — what depends only on a passage (sentence splits and
   embeddings, word keep-probabilities, concept embeddings). It is serialisable to bytes, and
   the pipeline caches it per passage under the compressor's :meth:`~BaseCompressor.fingerprint`,
   so a passage seen before is never analysed again.
2. :meth:`BaseCompressor.compress` — what depends on the query and the budget. It receives the
   analyses (from the cache or fresh) and does the selection.

Compressors with nothing worth caching leave :attr:`BaseCompressor.analysis_artefact` as
``None`` and ignore the ``analyses`` argument.

The unit of caching is a passage by default. A compressor whose analysis is made of independent
parts (CompLLM's concept embeddings per token segment) splits each passage into
:class:`AnalysisUnit` s with :meth:`BaseCompressor.analysis_units`; the pipeline then caches and
computes per unit, so a passage that shares segments with one seen before only analyses the new
segments, and :meth:`BaseCompressor.join_analyses` puts a passage's parts back together.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ragpress.exceptions import ConfigurationError, RagpressWarning
from ragpress.hashing import content_hash, fingerprint_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.types import CompressionOptions, CompressionResult, Passage

__all__ = ["CALLER_ONLY_KEYS", "CONFIG_FILE", "AnalysisUnit", "BaseCompressor", "saved_config"]

CONFIG_FILE = "ragpress_compressor.json"
CALLER_ONLY_KEYS = frozenset({"trust_remote_code"})
"""Constructor arguments taken only from the caller, never from a saved folder (issue 21): a
folder from elsewhere must not be able to switch on running its own code."""


@dataclass(frozen=True, slots=True)
class AnalysisUnit:
    """One independently cacheable part of a passage's analysis."""

    key: str
    """Content digest of what the analysis reads; it enters the cache key."""
    item: Any
    """What :meth:`BaseCompressor.analyze_units` receives for this unit."""


class BaseCompressor(ABC):
    """Base of all text compressors.

    Subclasses set :attr:`name`, :attr:`config_keys` (the constructor arguments that define
    its behaviour, all JSON-serialisable and stored as attributes of the same name) and
    implement :meth:`compress`.
    """

    name: ClassVar[str]
    """Registry name, e.g. ``"sentence_selection"``."""
    version: ClassVar[str] = "1"
    """Bumped whenever the algorithm's output changes, retiring cached analyses."""
    config_keys: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments that define the behaviour; they enter the fingerprint."""
    injected_keys: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments that take live objects (e.g. ``embedder``), not configuration."""
    analysis_artefact: ClassVar[str | None] = None
    """Cache artefact name of the per-passage analysis, or ``None`` when there is none."""
    adaptive_budget: ClassVar[bool] = False
    """Whether :meth:`compress` sizes an auto budget (``target_ratio="auto"``) to the evidence;
    the pipeline gives other compressors the budget's least compression instead."""
    output_kind: ClassVar[Literal["text", "embeddings"]] = "text"
    """``"embeddings"`` for compressors whose output is ``CompressionResult.embeddings`` (soft
    prompts that only a model taking ``inputs_embeds`` can read), not text."""

    _fingerprint: str | None = None

    def get_config_dict(self) -> dict[str, Any]:
        """The values of :attr:`config_keys`."""
        return {key: getattr(self, key) for key in self.config_keys}

    def model_revision(self) -> str | None:
        """Revision of the model weights the compressor uses, if any (enters the fingerprint)."""
        return None

    def fingerprint(self) -> str:
        """Hash of name, version, configuration and model revision.

        Cache keys include it, so changing a parameter or a model can never serve stale
        results.
        """
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of(
                {
                    "name": self.name,
                    "version": self.version,
                    "config": self.get_config_dict(),
                    "revision": self.model_revision(),
                }
            )
        return self._fingerprint

    def analysis_key(self, passage: Passage) -> str:
        """Content hash of what :meth:`analyze` reads from ``passage`` (title and text)."""
        return content_hash(passage.title or "", passage.text)

    def analyze(self, passages: Sequence[Passage]) -> list[Any]:
        """Query-independent analysis of each passage (one entry per passage).

        The default has nothing to analyse.
        """
        return [None] * len(passages)

    def analysis_units(self, passages: Sequence[Passage]) -> list[list[AnalysisUnit]]:
        """Split each passage into independently cacheable analysis units.

        The default makes each passage one unit keyed by :meth:`analysis_key`, analysed by
        :meth:`analyze`.
        """
        return [[AnalysisUnit(self.analysis_key(p), p)] for p in passages]

    def analyze_units(self, items: Sequence[Any]) -> list[Any]:
        """Analyse the items of :class:`AnalysisUnit` s (one result each, batched)."""
        return self.analyze(items)

    def join_analyses(
        self, passage: Passage, units: Sequence[AnalysisUnit], parts: Sequence[Any]
    ) -> Any:
        """A passage's analysis from the analyses of its units (default: the single part)."""
        return parts[0]

    def encode_analysis(self, analysis: Any) -> bytes:
        """Serialise one unit's analysis for the cache (never with pickle)."""
        raise NotImplementedError(f"{type(self).__name__} has no cacheable analysis")

    def decode_analysis(self, data: bytes) -> Any:
        """Inverse of :meth:`encode_analysis` (per unit when :meth:`analysis_units` splits)."""
        raise NotImplementedError(f"{type(self).__name__} has no cacheable analysis")

    def check_analysis(self, item: Any, analysis: Any) -> None:  # noqa: B027 - optional hook
        """Check that a decoded cache entry can be the analysis of ``item``.

        The pipeline calls it on every entry it reads from the cache, before use; an entry
        that fails is a miss and is recomputed. A well-formed entry can still be wrong (copied
        from another key, written by an older release, tampered with), so compressors check
        what the selection relies on: shapes against the model, spans against the text, token
        counts, finite numbers. The default checks nothing.

        Args:
            item: The unit's item (:attr:`AnalysisUnit.item`; the passage by default).
            analysis: What :meth:`decode_analysis` returned.

        Raises:
            ValueError: The entry cannot be the analysis of ``item``; the message says why.
        """

    @abstractmethod
    def compress(
        self,
        query: str | None,
        passages: Sequence[Passage],
        options: CompressionOptions,
        *,
        analyses: Sequence[Any] | None = None,
    ) -> CompressionResult:
        """Compress ``passages`` for ``query`` within the budget in ``options``.

        Args:
            query: The user's question, or ``None`` for query-agnostic compression.
            passages: The passages, in the order the result must keep.
            options: Budget and must-keep strings (already resolved against defaults).
            analyses: Results of :meth:`analyze` for these passages, when the caller has
                them (from a cache); computed here otherwise.

        Returns:
            One compressed passage per input passage, in order.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most compressors hold nothing
        """Release models and threads held by the compressor."""

    def save(self, path: str | Path) -> None:
        """Write the configuration to ``path/ragpress_compressor.json``.

        Compressors with trained weights extend this to write them beside it.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in self.get_config_dict().items() if k not in CALLER_ONLY_KEYS}
        payload = {"name": self.name, "version": self.version, "config": config}
        (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> BaseCompressor:
        """Rebuild a compressor saved with :meth:`save`.

        Args:
            path: The folder given to :meth:`save`.
            **overrides: Constructor arguments that replace saved ones (e.g. ``device``) or
                that cannot be saved (e.g. an ``embedder`` object). ``trust_remote_code`` is
                only ever taken from here: a saved file that sets it is ignored, with a
                warning.
        """
        config_file = Path(path) / CONFIG_FILE
        try:
            payload = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise ConfigurationError(
                f"{config_file} does not exist; pass a folder written by {cls.__name__}.save()"
            ) from None
        if payload.get("name") != cls.name:
            raise ConfigurationError(
                f"{config_file} holds a {payload.get('name')!r} compressor, not {cls.name!r}"
            )
        return cls(**{**saved_config(config_file, payload.get("config")), **overrides})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config_dict().items())
        return f"{type(self).__name__}({args})"


def saved_config(config_file: Path, config: Any) -> dict[str, Any]:
    """The constructor arguments saved in ``config_file``, without :data:`CALLER_ONLY_KEYS`.

    A saved file that sets one of those (``trust_remote_code``) is ignored for that key, with a
    warning: only the caller decides whether a checkpoint may run its own code.

    Raises:
        ConfigurationError: ``config`` is not an object.
    """
    if not isinstance(config, dict):
        raise ConfigurationError(
            f"{config_file}: 'config' must be an object of constructor arguments, not "
            f"{type(config).__name__}; save the compressor again"
        )
    refused = sorted(k for k in config if k in CALLER_ONLY_KEYS and config[k])
    if refused:
        warnings.warn(
            f"{config_file} sets {', '.join(f'{k}={config[k]!r}' for k in refused)}; ignored, "
            "since a saved folder may not allow running its own code. If you trust it, pass "
            f"{', '.join(f'{k}=True' for k in refused)} to load() (or as a --param)",
            RagpressWarning,
            stacklevel=3,
        )
    return {k: v for k, v in config.items() if k not in CALLER_ONLY_KEYS}
