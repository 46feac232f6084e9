"""The EXIT classifier: a causal LM (or a LoRA adapter on one) that answers "Yes" or "No".

:meth:`ExitClassifier.from_pretrained` loads the published ``doubleyyh/exit-gemma-2b`` (a peft
LoRA adapter on ``google/gemma-2b-it``) or any causal LM or adapter, by hub id or local folder;
a folder or repository holding ``adapter_config.json`` is an adapter, and its base model comes
from that file unless ``base_model`` names another copy (e.g. a local folder).

Prompts are rendered with the tokenizer's chat template and tokenized whole.
:meth:`ExitClassifier.fit` makes every prompt fit the model window by cutting **only the
context**: the query, the sentence, the question and the turn markers are never cut. (The
reference evaluation code truncated the whole prompt from the right, which drops the question
and the ``<start_of_turn>model`` tail on long inputs and turns the score into noise.)
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragpress.compressors.exit.prompt import GEMMA_TURNS, exit_user_message
from ragpress.compressors.exit.scoring import (
    DEFAULT_LIMITS,
    ScoringLimits,
    score_each,
    score_shared_prefix,
)
from ragpress.exceptions import ConfigurationError, MissingDependencyError, RequestValidationError
from ragpress.hub import model_not_found, model_revision, unsafe_checkpoint

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "transformers", extra="exit") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_EXIT_MODEL",
    "DType",
    "ExitClassifier",
    "FittedPrompts",
    "load_causal_lm",
    "resolve_dtype",
]

logger = logging.getLogger("ragpress.compressors.exit")

DEFAULT_EXIT_MODEL = "doubleyyh/exit-gemma-2b"
"""The published EXIT classifier: a LoRA adapter on google/gemma-2b-it."""

DType = Literal["auto", "float32", "bfloat16", "float16"]
_MAX_FIT_ROUNDS = 8
_UNBOUNDED = 1_000_000


@dataclass(frozen=True, slots=True)
class FittedPrompts:
    """The prompts of the sentences that share one context, ready for the model."""

    texts: tuple[str, ...]
    """Rendered prompts (chat template applied), one per sentence."""
    ids: tuple[tuple[int, ...], ...]
    """Their token ids, each within the prompt limit given to :meth:`ExitClassifier.fit`."""
    context_tokens: int | None = None
    """Tokens of the full context when it had to be cut, else ``None``."""
    kept_context_tokens: int | None = None
    """Tokens of the context that were kept when it had to be cut, else ``None``."""

    @property
    def truncated(self) -> bool:
        """Whether the context was cut to fit the window."""
        return self.context_tokens is not None


class ExitClassifier:
    """Scores (query, context, sentence) triples with P("Yes") from a causal LM.

    The classifier holds the model; how prompts are fitted and batched is given per call, so
    one loaded model can serve compressors with different settings.

    Args:
        model: A causal LM in eval mode, on its device.
        tokenizer: Its tokenizer (a chat template is used when it has one).
        name: What was loaded (hub id or folder), for messages.
        revision: Stable id of the weights (enters cache fingerprints).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        revision: str,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.yes_id, self.no_id = _answer_ids(tokenizer, name)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        self.window = _model_window(model, tokenizer)
        """Longest prompt the model and tokenizer accept, in tokens."""
        self._sliding_window, self._can_share_prefix = _cache_layout(model)
        self._lock = threading.Lock()  # one scoring pass at a time: bounded memory
        self._tokenizer_lock = threading.Lock()  # Rust tokenizers refuse concurrent borrows

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        base_model: str | None = None,
        revision: str | None = None,
        device: str = "cpu",
        dtype: DType = "auto",
        merge_adapter: bool = True,
    ) -> ExitClassifier:
        """Load a causal LM or a peft adapter (with its base model) by hub id or folder.

        Args:
            name_or_path: e.g. ``"doubleyyh/exit-gemma-2b"`` or a local folder.
            base_model: For an adapter: load this base instead of the one its
                ``adapter_config.json`` names (e.g. a local copy of gemma-2b-it).
            revision: Hub revision (branch, tag or commit) of ``name_or_path``.
            device: Torch device, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
            dtype: ``"auto"`` is bfloat16 on GPUs that support it, float16 on other GPUs, and
                float32 on CPU.
            merge_adapter: Fold a LoRA adapter into the base weights (faster inference).

        Raises:
            ModelNotFoundError: The model, adapter or base cannot be loaded.
            ConfigurationError: "Yes"/"No" are not distinct tokens, or bad arguments.
        """
        model, tokenizer, revision_id = load_causal_lm(
            name_or_path,
            base_model=base_model,
            revision=revision,
            device=device,
            dtype=dtype,
            merge_adapter=merge_adapter,
        )
        model.train(False)
        model.requires_grad_(False)
        return cls(model, tokenizer, name=name_or_path, revision=revision_id)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.model.parameters()).device

    # -- prompts -------------------------------------------------------------------------------

    def render(self, query: str, context: str, sentence: str) -> str:
        """The full EXIT prompt text for one sentence (chat template applied)."""
        message = exit_user_message(query, context, sentence)
        if getattr(self.tokenizer, "chat_template", None):
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": message}],
                tokenize=False,
                add_generation_prompt=True,
            )
            return str(rendered)
        return (self.tokenizer.bos_token or "") + GEMMA_TURNS.format(content=message)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered prompts (special tokens come from the template itself)."""
        if not texts:
            return []
        with self._tokenizer_lock:
            encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]

    def fit(
        self,
        query: str,
        context: str,
        sentences: Sequence[str],
        *,
        max_prompt_tokens: int | None = None,
    ) -> FittedPrompts:
        """Prompts for ``sentences`` in ``context``, cutting only the context to fit the window.

        The context is cut once for all the sentences (to the room the longest one leaves), at
        a token boundary, keeping its beginning, so every sentence of a document sees the same
        context and their prompts share a prefix.

        Args:
            query: The question.
            context: The context the sentences are judged in.
            sentences: The sentences to classify.
            max_prompt_tokens: Longest prompt; ``None`` (or more than the model accepts) uses
                the model window.

        Raises:
            RequestValidationError: The query and a sentence alone exceed the window.
        """
        limit = min(max_prompt_tokens or self.window, self.window)
        texts = [self.render(query, context, s) for s in sentences]
        ids = self.encode(texts)
        longest = max((len(i) for i in ids), default=0)
        if longest <= limit:
            return FittedPrompts(tuple(texts), tuple(tuple(i) for i in ids))
        full = context.strip()
        ends = self._token_ends(full)
        keep = len(ends) - (longest - limit)
        for _ in range(_MAX_FIT_ROUNDS):
            keep = max(keep, 0)
            cut = full[: ends[keep - 1]] if keep else ""
            texts = [self.render(query, cut, s) for s in sentences]
            ids = self.encode(texts)
            longest = max(len(i) for i in ids)
            if longest <= limit:
                return FittedPrompts(
                    tuple(texts),
                    tuple(tuple(i) for i in ids),
                    context_tokens=len(ends),
                    kept_context_tokens=keep,
                )
            if keep == 0:
                raise self._no_room(query, sentences, longest, limit)
            keep -= longest - limit
        raise self._no_room(query, sentences, longest, limit)  # pragma: no cover - pathology

    def _token_ends(self, text: str) -> list[int]:
        """Character offset where each token of ``text`` ends."""
        try:
            with self._tokenizer_lock:
                encoded = self.tokenizer(
                    text, add_special_tokens=False, return_offsets_mapping=True
                )
            ends = [int(end) for _, end in encoded["offset_mapping"]]
        except NotImplementedError:  # slow tokenizers have no offsets: cut proportionally
            n = len(self.encode([text])[0])
            ends = [round(len(text) * (i + 1) / max(n, 1)) for i in range(n)]
        return list(itertools.accumulate(ends, max))  # never cut inside an earlier token

    def _no_room(
        self, query: str, sentences: Sequence[str], longest: int, limit: int
    ) -> RequestValidationError:
        query_tokens = len(self.encode([query])[0])
        sentence_tokens = max(len(ids) for ids in self.encode(list(sentences)))
        return RequestValidationError(
            f"the EXIT prompt needs {longest} tokens even with no context, more than "
            f"max_prompt_tokens={limit} (query: {query_tokens} tokens, longest "
            f"sentence: {sentence_tokens} tokens); shorten the query or raise max_prompt_tokens",
            param="query",
        )

    # -- scoring -------------------------------------------------------------------------------

    def score(
        self, groups: Sequence[FittedPrompts], *, limits: ScoringLimits = DEFAULT_LIMITS
    ) -> list[list[float]]:
        """P(Yes) of every prompt; each group's shared prefix runs once (see exit_scoring).

        Args:
            groups: Prompts from :meth:`fit`, one group per shared context.
            limits: Batch size and token bound per forward pass.
        """
        # A padded batch is at most twice its longest prompt; inside a sliding window that is
        # still exact attention. Beyond it, or with recurrent layers, score prompt by prompt.
        shareable = [
            g
            for g, group in enumerate(groups)
            if group.ids
            and self._can_share_prefix
            and (
                self._sliding_window is None or 2 * max(map(len, group.ids)) <= self._sliding_window
            )
        ]
        out: list[list[float]] = [[] for _ in groups]
        with self._lock:
            shared = score_shared_prefix(
                self.model,
                [groups[g].ids for g in shareable],
                yes_id=self.yes_id,
                no_id=self.no_id,
                pad_id=self.pad_id,
                limits=limits,
            )
            for g, scores in zip(shareable, shared, strict=True):
                out[g] = scores
            for g in sorted(set(range(len(groups))) - set(shareable)):
                out[g] = score_each(self.model, groups[g].ids, yes_id=self.yes_id, no_id=self.no_id)
        return out

    def score_one_by_one(self, groups: Sequence[FittedPrompts]) -> list[list[float]]:
        """P(Yes) of every prompt, one full forward pass each (the reference code's way)."""
        with self._lock:
            return [
                score_each(self.model, group.ids, yes_id=self.yes_id, no_id=self.no_id)
                for group in groups
            ]


# -- loading -----------------------------------------------------------------------------------


def resolve_dtype(dtype: DType, device: str) -> torch.dtype:
    """The torch dtype for ``dtype`` on ``device`` (``"auto"``: bf16/fp16 on GPU, fp32 else)."""
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_causal_lm(
    name_or_path: str,
    *,
    base_model: str | None = None,
    revision: str | None = None,
    device: str = "cpu",
    dtype: DType = "auto",
    merge_adapter: bool = True,
    trainable_adapter: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """Load a causal LM, or a peft adapter on its base, with the right tokenizer.

    Args:
        name_or_path: Hub id or folder of a full model or of an adapter.
        base_model: Base model to put an adapter on, instead of the one it names.
        revision: Hub revision of ``name_or_path``.
        device: Torch device.
        dtype: See :func:`resolve_dtype`.
        merge_adapter: Fold an adapter into the base weights.
        trainable_adapter: Load an adapter with trainable weights (to continue training).

    Returns:
        ``(model, tokenizer, revision id)``; the revision id names base and adapter.

    Raises:
        ModelNotFoundError: Something cannot be loaded (offline, misspelt, not downloaded).
    """
    torch_dtype = resolve_dtype(dtype, device)
    adapter = _adapter_config(name_or_path, revision)
    model: Any
    if adapter is None:
        model = _auto_model(name_or_path, revision, torch_dtype)
        tokenizer = _auto_tokenizer(name_or_path, revision)
        return model.to(device), tokenizer, model_revision(name_or_path)
    base = base_model or adapter.get("base_model_name_or_path")
    if not base:
        raise ConfigurationError(
            f"adapter {name_or_path!r} does not name its base model (no base_model_name_or_path "
            "in adapter_config.json); pass base_model='<hub id or folder>'"
        )
    from peft import PeftModel

    model = _auto_model(base, None, torch_dtype)
    try:
        tokenizer = _auto_tokenizer(name_or_path, revision)
    except ConfigurationError:
        tokenizer = _auto_tokenizer(base, None)
    try:
        peft_model = PeftModel.from_pretrained(
            model, name_or_path, revision=revision, is_trainable=trainable_adapter
        )
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint(name_or_path, exc, what="adapter") from None
    except (OSError, ValueError) as exc:
        raise model_not_found(name_or_path, exc, what="adapter") from exc
    loaded: Any = peft_model.merge_and_unload() if merge_adapter else peft_model
    revision_id = f"{model_revision(base)}+{model_revision(name_or_path)}"
    return loaded.to(device), tokenizer, revision_id


def _adapter_config(name_or_path: str, revision: str | None) -> dict[str, Any] | None:
    """``adapter_config.json`` of a peft adapter folder or repository, else ``None``.

    Raises:
        ModelNotFoundError: A hub id that is neither cached nor reachable.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        file = folder / "adapter_config.json"
        return json.loads(file.read_text()) if file.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
    )

    try:
        cached = try_to_load_from_cache(name_or_path, "adapter_config.json", revision=revision)
    except ValueError as exc:  # not a valid repo id, and not a folder either
        raise model_not_found(name_or_path, exc) from exc
    if isinstance(cached, str):
        path = cached
    elif cached is not None:  # the cache knows the repository has no such file
        return None
    elif isinstance(try_to_load_from_cache(name_or_path, "config.json", revision=revision), str):
        return None  # a full model in the local cache: works offline
    else:
        try:
            path = hf_hub_download(name_or_path, "adapter_config.json", revision=revision)
        except LocalEntryNotFoundError as exc:  # hub unreachable and nothing cached
            raise model_not_found(name_or_path, "not in the local cache, hub unreachable") from exc
        except (RemoteEntryNotFoundError, EntryNotFoundError):
            return None  # the repository exists and holds a full model
        except OSError as exc:
            raise model_not_found(name_or_path, exc) from exc
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _auto_model(name: str, revision: str | None, dtype: torch.dtype) -> PreTrainedModel:
    try:
        auto: Any = AutoModelForCausalLM
        model: PreTrainedModel = auto.from_pretrained(name, revision=revision, dtype=dtype)
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint(name, exc) from None
    except (OSError, ValueError) as exc:
        raise model_not_found(name, exc) from exc
    return model


def _auto_tokenizer(name: str, revision: str | None) -> PreTrainedTokenizerBase:
    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as exc:
        raise model_not_found(name, exc, what="tokenizer") from exc
    return tokenizer


def _answer_ids(tokenizer: PreTrainedTokenizerBase, name: str) -> tuple[int, int]:
    """First token ids of "Yes" and "No" (EXIT reads the logits of exactly these two)."""
    yes = tokenizer.encode("Yes", add_special_tokens=False)
    no = tokenizer.encode("No", add_special_tokens=False)
    if not yes or not no or yes[0] == no[0]:
        raise ConfigurationError(
            f"the tokenizer of {name!r} does not give distinct first tokens for 'Yes' and 'No' "
            f"({yes} and {no}); EXIT needs a model that can answer with either"
        )
    if len(yes) > 1 or len(no) > 1:
        logger.warning(
            "'Yes'/'No' are several tokens in %s (%s, %s); scoring their first tokens",
            name,
            yes,
            no,
        )
    return int(yes[0]), int(no[0])


def _model_window(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest input the model and tokenizer accept (4096 when neither says)."""
    config = model.config.get_text_config()
    limits = [
        value
        for value in (
            getattr(config, "max_position_embeddings", None),
            getattr(tokenizer, "model_max_length", None),
        )
        if isinstance(value, int) and 0 < value < _UNBOUNDED
    ]
    return min(limits) if limits else 4096


def _cache_layout(model: PreTrainedModel) -> tuple[int | None, bool]:
    """``(sliding window or None, whether padded prefix caches are exact for this model)``.

    Linear-attention (recurrent) layers cannot hold a padded prefix; sliding-window layers can
    as long as the whole padded prompt stays inside the window.
    """
    layout = DynamicCache(config=model.config)
    if not layout.layers:  # no layer types declared: plain full attention
        return None, True
    if any(layout.is_linear):
        return None, False
    if any(layout.is_sliding):
        window = getattr(model.config.get_text_config(), "sliding_window", None)
        return (int(window) if window else None), True
    return None, True
