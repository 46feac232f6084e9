"""Compat mode: reproduces ``llmlingua==0.2.2`` ``compress_prompt(..., use_llmlingua2=True)``.

Same text, same kept words, same cl100k token counts on the same checkpoint, with its quirks
(see "Compat mode" in ``docs/compressors/llmlingua2.md``): per-chunk percentile thresholds
weighted by cl100k counts of ``▁``-prefixed words, 511-token windows that are detokenised and
re-tokenised, BERT special strings fed to every model, only the first piece of a forced word
boosted, unknown words dropped, chunks joined with ``""``. What it does not copy: the second
forward pass of the context filter (pass-1 probabilities are reused: the inputs are identical),
the padding of every chunk to 512 positions, per-context forward calls, global seeding, and the
crashes on empty input or ``rate=0`` (those become :class:`RequestValidationError`).

Word rules follow the tokenizer's model (WordPiece or SentencePiece/Unigram/BPE with ``▁``),
not the checkpoint's name.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import RequestValidationError
from ragpress.tokens import get_token_counter

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ragpress.exceptions import MissingDependencyError

    raise MissingDependencyError(exc.name or "numpy", extra="llmlingua2") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.compressors.llmlingua2.model import TokenClassifier

__all__ = [
    "CompatChunks",
    "CompatOptions",
    "CompatResult",
    "LLMLingua2Compat",
    "WordRules",
    "decode_chunks",
    "encode_chunks",
]

WordRules = Literal["wordpiece", "sentencepiece"]

MAX_SEQ_LEN = 512
MAX_FORCE_TOKEN = 100
_DIGIT = re.compile(r"\d")
_SPLIT_WORDS = re.compile(r'\b\w+\b|[<>=/!@#$%^&*()?":{}|\\`~;_+-]')
# The reference always builds inputs with BERT's strings (llmlingua issue #181).
_CLS, _SEP, _PAD = "[CLS]", "[SEP]", "[PAD]"


@dataclass(frozen=True, slots=True)
class CompatOptions:
    """The ``compress_prompt`` arguments compat mode reproduces (reference defaults)."""

    rate: float = 0.5
    target_token: int = -1
    use_context_level_filter: bool = True
    """``compress_prompt``'s default; ``compress_prompt_llmlingua2`` defaults to False."""
    force_tokens: tuple[str, ...] = ()
    force_reserve_digit: bool = False
    drop_consecutive: bool = False
    token_to_word: Literal["mean", "first"] = "mean"
    chunk_end_tokens: tuple[str, ...] = (".", "\n")
    force_context_ids: tuple[int, ...] = ()
    target_context: int = -1
    context_level_rate: float = 1.0
    context_level_target_token: int = -1


@dataclass(frozen=True, slots=True)
class CompatChunks:
    """One context after chunking and the forward pass (query-independent, cacheable)."""

    chunks: tuple[str, ...]
    """The detokenised chunk strings (force-token placeholders in place)."""
    ids: tuple[Any, ...]
    """Per chunk, the model's input ids (int64 arrays), special tokens included."""
    probs: tuple[Any, ...]
    """Per chunk, float32 P(keep) aligned with ``tokens``."""


@dataclass
class CompatResult:
    """What ``compress_prompt`` returns, with numbers as numbers."""

    compressed_prompt: str
    compressed_prompt_list: list[str]
    origin_tokens: int
    compressed_tokens: int
    words: list[str] = field(default_factory=list)
    """Every word of the kept contexts, plus dropped contexts' words (labels 0)."""
    labels: list[int] = field(default_factory=list)
    kept_contexts: list[int] = field(default_factory=list)
    """Indices of the contexts that survived the context-level filter."""

    def fn_labeled_original_prompt(self, word_sep: str = "\t\t|\t\t", label_sep: str = " ") -> str:
        """The reference's ``fn_labeled_original_prompt`` string."""
        return word_sep.join(
            f"{w}{label_sep}{lab}" for w, lab in zip(self.words, self.labels, strict=False)
        )


class LLMLingua2Compat:
    """The reference algorithm over a loaded classifier.

    Args:
        classifier: Tokenizer and model; the tokenizer gets ``[NEW0]`` ... ``[NEW99]`` added and
            the embeddings grow, seeded with 42 as the reference does (in a forked RNG).
        rules: Word rules, from the tokenizer's model type.
        max_batch_size: Chunks per forward pass.
    """

    def __init__(
        self, classifier: TokenClassifier, rules: WordRules, *, max_batch_size: int = 50
    ) -> None:
        from ragpress.compressors.llmlingua2.model import seeded

        self.classifier = classifier
        self.rules = rules
        self.max_batch_size = max_batch_size
        tokenizer = classifier.tokenizer
        self.special_tokens = _reference_special_tokens(tokenizer, classifier.model.config)
        self.added_tokens = [f"[NEW{i}]" for i in range(MAX_FORCE_TOKEN)]
        tokenizer.add_special_tokens({"additional_special_tokens": self.added_tokens})
        with seeded(42):
            classifier.model.resize_token_embeddings(len(tokenizer))
        self._encoding = get_token_counter("cl100k_base").encoding  # type: ignore[attr-defined]

    # -- token counts (cl100k, as the reference) -------------------------------------------------

    def count(self, text: str) -> int:
        """cl100k tokens of ``text``."""
        return len(self._encoding.encode_ordinary(text))

    def token_map(self, force_tokens: Sequence[str]) -> dict[str, str]:
        """Force tokens that are not one piece, mapped to their ``[NEWi]`` placeholder."""
        if len(force_tokens) > MAX_FORCE_TOKEN:
            raise RequestValidationError(
                f"{len(force_tokens)} force tokens given; at most {MAX_FORCE_TOKEN} are supported",
                param="force_tokens",
            )
        tokenizer = self.classifier.tokenizer
        return {
            t: self.added_tokens[i]
            for i, t in enumerate(force_tokens)
            if len(tokenizer.tokenize(t)) != 1
        }

    # -- chunking and the forward pass ------------------------------------------------------------

    def prepare(self, contexts: Sequence[str], options: CompatOptions) -> list[CompatChunks]:
        """Chunk every context and run the model once over all chunks (length-sorted batches)."""
        token_map = self.token_map(options.force_tokens)
        end_tokens = set(options.chunk_end_tokens)
        end_tokens.update(token_map[c] for c in options.chunk_end_tokens if c in token_map)
        tokenizer = self.classifier.tokenizer
        chunked: list[list[str]] = []
        for text in contexts:
            for original, placeholder in token_map.items():
                text = text.replace(original, placeholder)
            chunked.append(self._chunk(text, end_tokens))
        flat = [c for chunks in chunked for c in chunks]
        rows: list[list[str]] = []
        for chunk in flat:
            tokens = [_CLS, *tokenizer.tokenize(chunk), _SEP][:MAX_SEQ_LEN]
            rows.append([t for t in tokens if t != _PAD])
        ids = [tokenizer.convert_tokens_to_ids(r) for r in rows]
        probs = self.classifier.keep_probabilities(
            ids,
            add_special_tokens=False,
            max_batch_size=self.max_batch_size,
            pad_id=tokenizer.convert_tokens_to_ids(_PAD),
        )
        out: list[CompatChunks] = []
        k = 0
        for chunks in chunked:
            n = len(chunks)
            out.append(
                CompatChunks(
                    chunks=tuple(chunks),
                    ids=tuple(np.asarray(i, dtype=np.int64) for i in ids[k : k + n]),
                    probs=tuple(probs[k : k + n]),
                )
            )
            k += n
        return out

    def tokens_of(self, ids: Any) -> list[str]:
        """Token strings of a chunk's input ids."""
        return list(self.classifier.tokenizer.convert_ids_to_tokens(ids.tolist()))

    def _chunk(self, text: str, end_tokens: set[str]) -> list[str]:
        tokenizer = self.classifier.tokenizer
        max_len = MAX_SEQ_LEN - 2
        pieces = tokenizer.tokenize(text)
        n = len(pieces)
        out: list[str] = []
        start = 0
        while start < n:
            if start + max_len > n - 1:
                out.append(tokenizer.convert_tokens_to_string(pieces[start:n]))
                break
            end = start + max_len
            for j in range(end - start):
                if pieces[end - j] in end_tokens:
                    end -= j
                    break
            out.append(tokenizer.convert_tokens_to_string(pieces[start : end + 1]))
            start = end + 1
        return out

    # -- the algorithm ----------------------------------------------------------------------------

    def compress(
        self,
        contexts: Sequence[str],
        options: CompatOptions,
        prepared: Sequence[CompatChunks] | None = None,
    ) -> CompatResult:
        """``compress_prompt(contexts, use_llmlingua2=True, ...)`` of llmlingua 0.2.2.

        Raises:
            RequestValidationError: ``rate`` outside (0, 1], or a token budget of 0 that the
                reference would crash on.
        """
        if not (options.rate > 0) or options.rate != options.rate:
            raise RequestValidationError(
                f"rate={options.rate} must be > 0 (the fraction of tokens to keep)", param="rate"
            )
        contexts = list(contexts)
        token_map = self.token_map(options.force_tokens)
        if prepared is None:
            prepared = self.prepare(contexts, options)
        n_original = sum(self.count(c) for c in contexts)
        rate = options.rate
        target_token = options.target_token
        use_filter = options.use_context_level_filter and len(contexts) > 1
        kept = list(range(len(contexts)))
        dropped_words: dict[int, list[str]] = {}
        if use_filter:
            kept, dropped_words, n_reserved = self._context_filter(
                prepared, options, token_map, n_original
            )
            if target_token >= 0:
                rate = min(target_token / n_reserved, 1.0) if n_reserved else 1.0
        elif target_token > 0:
            rate = min(target_token / n_original, 1.0) if n_original else 1.0
        if rate <= 0:
            raise RequestValidationError(
                f"target_token={target_token} leaves nothing to keep; give a positive budget",
                param="target_token",
            )
        reduce_rate = max(0.0, 1 - rate)
        texts: list[str] = []
        words_by_context: dict[int, list[str]] = {}
        labels_by_context: dict[int, list[int]] = {}
        for index in kept:
            text, words, labels = self._compress_context(
                prepared[index], reduce_rate, options, token_map
            )
            texts.append(text)
            words_by_context[index] = words
            labels_by_context[index] = labels
        all_words: list[str] = []
        all_labels: list[int] = []
        for index in range(len(contexts)):
            if index in words_by_context:
                all_words += words_by_context[index]
                all_labels += labels_by_context[index]
            elif index in dropped_words:
                all_words += dropped_words[index]
                all_labels += [0] * len(dropped_words[index])
        return CompatResult(
            compressed_prompt="\n\n".join(texts),
            compressed_prompt_list=texts,
            origin_tokens=n_original,
            compressed_tokens=sum(self.count(t) for t in texts),
            words=all_words,
            labels=all_labels,
            kept_contexts=kept,
        )

    def _context_filter(
        self,
        prepared: Sequence[CompatChunks],
        options: CompatOptions,
        token_map: dict[str, str],
        n_original: int,
    ) -> tuple[list[int], dict[int, list[str]], int]:
        rate, target_token = options.rate, options.target_token
        level_rate = options.context_level_rate
        level_target = options.context_level_target_token
        if options.target_context <= 0 and level_rate >= 1.0 and level_target <= 0:
            if target_token < 0 and rate < 1.0:
                level_rate = (rate + 1.0) / 2
            if target_token >= 0:
                level_target = target_token * 2
        if options.target_context >= 0:
            level_rate = min(options.target_context / len(prepared), 1.0)
        if level_target >= 0:
            level_rate = min(level_target / n_original, 1.0) if n_original else 1.0
        scores: list[Any] = []
        words_of: dict[int, list[str]] = {}
        for index, context in enumerate(prepared):
            probs: list[Any] = []
            words: list[str] = []
            for ids, token_probs in zip(context.ids, context.probs, strict=False):
                tokens = self.tokens_of(ids)
                w, _, no_force = self._merge(tokens, token_probs, options, token_map)
                probs += _pool(no_force, options.token_to_word)
                words += [x.lstrip("▁") for x in w] if self.rules == "sentencepiece" else w
            words_of[index] = words
            # An empty context scores 0 (the reference divides by zero).
            scores.append(sum(probs) / len(probs) if probs else np.float32(0.0))
        threshold = np.percentile(scores, int(100 * (1 - level_rate)))
        forced = set(options.force_context_ids)
        kept = [i for i, p in enumerate(scores) if p >= threshold or i in forced]
        n_reserved = sum(self.count(c) for i in kept for c in prepared[i].chunks)
        dropped = {i: w for i, w in words_of.items() if i not in set(kept)}
        return kept, dropped, n_reserved

    def _compress_context(
        self,
        context: CompatChunks,
        reduce_rate: float,
        options: CompatOptions,
        token_map: dict[str, str],
    ) -> tuple[str, list[str], list[int]]:
        if reduce_rate <= 0:
            words: list[str] = []
            restored = []
            for chunk in context.chunks:
                for original, placeholder in token_map.items():
                    chunk = chunk.replace(placeholder, original)
                restored.append(chunk)
                words += _SPLIT_WORDS.findall(chunk)
            return "".join(restored), words, [1] * len(words)
        texts: list[str] = []
        all_words: list[str] = []
        all_labels: list[int] = []
        for ids, token_probs in zip(context.ids, context.probs, strict=False):
            text, words, labels = self._compress_chunk(
                self.tokens_of(ids), token_probs, reduce_rate, options, token_map
            )
            texts.append(text)
            all_words += words
            all_labels += labels
        return "".join(texts), all_words, all_labels

    def _compress_chunk(
        self,
        tokens: Sequence[str],
        token_probs: Any,
        reduce_rate: float,
        options: CompatOptions,
        token_map: dict[str, str],
    ) -> tuple[str, list[str], list[int]]:
        force_tokens = options.force_tokens
        words, pieces, _ = self._merge(tokens, token_probs, options, token_map)
        word_probs = _pool(pieces, options.token_to_word)
        if options.drop_consecutive and word_probs:
            threshold = np.percentile(word_probs, int(100 * reduce_rate))
            between = False
            previous = None
            for i, (word, prob) in enumerate(zip(words, word_probs, strict=False)):
                if word in force_tokens:
                    if between:
                        between = False
                    elif word == previous:
                        word_probs[i] = 0.0
                    previous = word
                else:
                    between |= bool(prob > threshold)
        if not words:
            return self.classifier.tokenizer.convert_tokens_to_string([]), [], []
        counts = [len(ids) for ids in self._encoding.encode_ordinary_batch(words)]
        # np.array over the reference's list: float32 unless a Python float (a forced 1.0 or a
        # dropped 0.0) is among the values, then float64.
        exact = all(isinstance(p, np.float32) for p in word_probs)
        values = np.asarray(word_probs, dtype=np.float32 if exact else np.float64)
        threshold = np.percentile(np.repeat(values, counts), int(100 * reduce_rate + 1))
        keep_words: list[str] = []
        labels: list[int] = []
        for word, prob in zip(words, word_probs, strict=False):
            if prob > threshold or (threshold == 1.0 and prob == threshold):
                if (
                    options.drop_consecutive
                    and word in force_tokens
                    and keep_words
                    and keep_words[-1] == word
                ):
                    labels.append(0)
                else:
                    keep_words.append(word)
                    labels.append(1)
            else:
                labels.append(0)
        text = self.classifier.tokenizer.convert_tokens_to_string(keep_words)
        if self.rules == "sentencepiece":
            words = [w.lstrip("▁") for w in words]
        return text, words, labels

    def _merge(
        self,
        tokens: Sequence[str],
        probs: Any,
        options: CompatOptions,
        token_map: dict[str, str],
    ) -> tuple[list[str], list[list[Any]], list[list[Any]]]:
        """Tokens to words, with per-piece probabilities (forced and not forced)."""
        force = options.force_tokens
        placeholders = set(token_map.values())
        digits = options.force_reserve_digit
        wordpiece = self.rules == "wordpiece"
        words: list[str] = []
        word_probs: list[list[Any]] = []
        no_force: list[list[Any]] = []
        prob_no_force: Any = None
        for token, prob in zip(tokens, probs, strict=False):
            if token in self.special_tokens:
                continue
            if wordpiece:
                bare = token.lstrip("#")
                begins = bare in force or bare in placeholders or not token.startswith("##")
            else:
                bare = token.lstrip("▁")
                begins = (
                    token in string.punctuation
                    or token in force
                    or token in placeholders
                    or token.startswith("▁")
                )
            if begins:
                prob_no_force = prob
                if bare in force or bare in placeholders:
                    prob = 1.0
                for original, placeholder in token_map.items():
                    token = token.replace(placeholder, original)
                words.append(token)
                word_probs.append([1.0 if digits and _DIGIT.search(token) else prob])
                no_force.append([prob_no_force])
            else:
                words[-1] += bare
                word_probs[-1].append(1.0 if digits and _DIGIT.search(token) else prob)
                no_force[-1].append(prob_no_force)
        return words, word_probs, no_force


def _pool(pieces: list[list[Any]], mode: str) -> list[Any]:
    if mode == "first":
        return [p[0] for p in pieces]
    return [sum(p) / len(p) for p in pieces]


def _reference_special_tokens(tokenizer: Any, config: Any) -> set[str]:
    """The special strings the reference skips, after its pad-token rewrite.

    llmlingua sets ``pad_token_id = config.pad_token_id or eos_token_id`` on load, which for
    BERT (pad id 0, no eos) removes ``[PAD]`` from the set.
    """
    mapping = {
        k: v for k, v in tokenizer.special_tokens_map.items() if k != "additional_special_tokens"
    }
    pad_id = config.pad_token_id if config.pad_token_id else tokenizer.eos_token_id
    if pad_id is None:
        mapping.pop("pad_token", None)
    else:
        mapping["pad_token"] = tokenizer.convert_ids_to_tokens(pad_id)
    return {v for v in mapping.values() if isinstance(v, str)}


def encode_chunks(analysis: CompatChunks) -> bytes:
    """Serialise a context's chunks and probabilities with safetensors (no pickle)."""
    from safetensors.numpy import save as save_arrays

    lengths = np.asarray([len(i) for i in analysis.ids], dtype=np.int64)
    empty_i, empty_p = np.zeros(0, np.int64), np.zeros(0, np.float32)
    return bytes(
        save_arrays(
            {
                "lengths": lengths,
                "ids": np.concatenate(analysis.ids) if analysis.ids else empty_i,
                "probs": np.concatenate(analysis.probs) if analysis.probs else empty_p,
            },
            metadata={"schema": "1", "kind": "compat", "chunks": json.dumps(analysis.chunks)},
        )
    )


def decode_chunks(data: bytes) -> CompatChunks:
    """Inverse of :func:`encode_chunks`."""
    from safetensors.numpy import load as load_arrays

    arrays = load_arrays(data)
    metadata = _safetensors_metadata(data)
    bounds = np.cumsum(arrays["lengths"])[:-1]
    ids = tuple(np.split(arrays["ids"], bounds)) if arrays["lengths"].size else ()
    probs = tuple(np.split(arrays["probs"], bounds)) if arrays["lengths"].size else ()
    return CompatChunks(chunks=tuple(json.loads(metadata["chunks"])), ids=ids, probs=probs)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    import struct

    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    metadata: dict[str, str] = header.get("__metadata__", {})
    return metadata
