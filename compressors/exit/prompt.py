"""The EXIT classification prompt, in plain Python (no model, no tokenizer).

EXIT (Hwang et al., 2024, arXiv 2412.12559) asks a causal LM, once per sentence, whether the
sentence helps answer the query, given the full context it came from. The user turn is, verbatim
from the paper (Table 6)::

    Query:
    {query}
    Full context:
    {context}
    Sentence:
    {sentence}
    Is this sentence useful in answering the query? Answer only "Yes" or "No".

and it is wrapped in the model's chat template (Gemma: ``<bos><start_of_turn>user\\n...
<end_of_turn>\\n<start_of_turn>model\\n``). Query, context and sentence are stripped. A
document's context is ``"{title}\\n{text}"``, as in the training data.

Everything up to ``Sentence:\\n`` is the same for all sentences of one context; the scorer runs
that prefix through the model once and reuses its key/value cache for every sentence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.types import Passage

__all__ = [
    "EXIT_QUESTION",
    "GEMMA_TURNS",
    "all_documents_context",
    "document_context",
    "exit_user_message",
]

EXIT_QUESTION = 'Is this sentence useful in answering the query? Answer only "Yes" or "No".'
"""The closing question of the EXIT prompt."""

GEMMA_TURNS = "<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n"
"""The paper's turn format, used (after the BOS token) for tokenizers without a chat template."""

DOCUMENT_SEPARATOR = "\n\n"


def exit_user_message(query: str, context: str, sentence: str) -> str:
    """The user turn of the EXIT prompt for one sentence.

    Args:
        query: The question.
        context: The full context the sentence is judged in (already fitted to the window).
        sentence: The sentence to classify.
    """
    return (
        f"Query:\n{query.strip()}\n"
        f"Full context:\n{context.strip()}\n"
        f"Sentence:\n{sentence.strip()}\n"
        f"{EXIT_QUESTION}"
    )


def document_context(title: str | None, text: str) -> str:
    """One document as EXIT context: ``"{title}\\n{text}"``, or the text alone without a title."""
    body = text.strip()
    heading = (title or "").strip()
    return f"{heading}\n{body}" if heading else body


def all_documents_context(passages: Sequence[Passage]) -> str:
    """Every non-empty document as one context, separated by blank lines (EXIT's quickstart)."""
    return DOCUMENT_SEPARATOR.join(
        document_context(p.title, p.text) for p in passages if p.text.strip()
    )
