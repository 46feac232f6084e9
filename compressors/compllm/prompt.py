"""The prompt around the context: ``[instruction tokens | context | question tokens]``.

The chat template is applied here, on our side, because a vLLM server given ``prompt_embeds``
applies none. The template is rendered once with a unique placeholder where the context goes and
split there, so the same token prefix and suffix frame the full-text context (the teacher in
training, the full-context baseline) and the concept embeddings (the student, and inference).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transformers import PreTrainedTokenizerBase

__all__ = ["DEFAULT_INSTRUCTION", "PromptParts", "PromptTemplate"]

DEFAULT_INSTRUCTION = "Answer the question using the documents."


@dataclass(frozen=True, slots=True)
class PromptParts:
    """Token ids before and after the context."""

    prefix: tuple[int, ...]
    """Template start, system prompt, instruction (BOS included when the model uses one)."""
    suffix: tuple[int, ...]
    """The question and the start of the assistant turn."""

    def around(self, context_ids: Sequence[int]) -> list[int]:
        """The whole prompt with the context as plain tokens."""
        return [*self.prefix, *context_ids, *self.suffix]


class PromptTemplate:
    """Frames a context and a question the way the target model expects.

    Args:
        tokenizer: The target model's tokenizer; its chat template is used when it has one,
            a plain ``Documents: ... Question: ... Answer:`` layout otherwise.
        instruction: The line that tells the model what to do with the documents.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *, instruction: str = DEFAULT_INSTRUCTION
    ) -> None:
        self.tokenizer = tokenizer
        self.instruction = instruction

    def parts(self, question: str, *, system: str | None = None) -> PromptParts:
        """Token ids before and after the context for ``question``.

        Raises:
            ConfigurationError: The chat template drops the user message content.
        """
        placeholder = f"<<context-{uuid.uuid4().hex}>>"
        content = f"{self.instruction}\n\nDocuments:\n{placeholder}Question: {question.strip()}"
        tokenizer = self.tokenizer
        if tokenizer.chat_template:
            messages = [{"role": "user", "content": content}]
            if system:
                messages.insert(0, {"role": "system", "content": system})
            rendered = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            assert isinstance(rendered, str)
        else:
            head = f"{system.strip()}\n\n" if system else ""
            rendered = f"{tokenizer.bos_token or ''}{head}{content}\nAnswer:"
        before, found, after = rendered.partition(placeholder)
        if not found:
            raise ConfigurationError(
                "the tokenizer's chat template does not reproduce the user message, so the "
                "context cannot be placed in it; give the tokenizer a standard chat template"
            )
        return PromptParts(self._ids(before), self._ids(after))

    def _ids(self, text: str) -> tuple[int, ...]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(ids)
