from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragpress.exceptions import ConfigurationError
from ragpress.retrieval.chunking import ChunkingOptions, chunk_passage, chunk_spans
from ragpress.tokens import get_token_counter
from ragpress.types import Passage

COUNTER = get_token_counter()
PROSE = " ".join(
    f"Sentence number {i} says that the river is {i * 3} metres deep at mile {i}."
    for i in range(60)
)


def test_chunks_are_contiguous_slices_within_the_budget() -> None:
    options = ChunkingOptions(chunk_tokens=60, overlap_tokens=15)
    spans = chunk_spans(PROSE, options)
    assert len(spans) > 5
    for start, end in spans:
        assert COUNTER.count(PROSE[start:end]) <= 60 + 2  # joins add at most a space token
        assert PROSE[start:end] == PROSE[start:end].strip()
    assert spans[0][0] == 0 and spans[-1][1] == len(PROSE)


def test_consecutive_chunks_overlap_by_whole_sentences() -> None:
    spans = chunk_spans(PROSE, ChunkingOptions(chunk_tokens=60, overlap_tokens=25))
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s1 < s2 < e1 < e2  # the next chunk starts inside the previous one
        assert PROSE[s2:e1].startswith("Sentence number")


def test_no_overlap_when_asked() -> None:
    spans = chunk_spans(PROSE, ChunkingOptions(chunk_tokens=60, overlap_tokens=0))
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))


def test_a_sentence_longer_than_a_chunk_is_cut_between_words() -> None:
    text = "word " * 500 + "end."
    spans = chunk_spans(text, ChunkingOptions(chunk_tokens=50, overlap_tokens=0))
    assert len(spans) >= 10
    for start, end in spans:
        assert COUNTER.count(text[start:end]) <= 51
        assert text[start:end].split()[0] in ("word", "end.")


def test_blank_text_has_no_chunks() -> None:
    assert chunk_spans("   \n\n ") == []


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens"), [(4, 0), (100, 100), (100, -1), (100, 150)]
)
def test_bad_sizes_are_rejected_with_the_fix(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ConfigurationError, match=r"chunk_tokens|overlap_tokens"):
        ChunkingOptions(chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)


def test_chunk_passages_remember_their_document_and_offsets() -> None:
    text = (
        "# Guide\n\nIntro sentence one. Intro sentence two.\n\n## Setup\n\n"
        + "Install the tool. Configure it carefully. " * 20
        + "\n\n## Usage\n\nRun it daily. Check the logs."
    )
    doc = Passage(text, title="Guide", id="guide.md", metadata={"source": "guide.md", "lang": "en"})
    chunks = chunk_passage(doc, ChunkingOptions(chunk_tokens=40, overlap_tokens=8))
    assert [c.id for c in chunks] == [f"guide.md#{i}" for i in range(len(chunks))]
    for number, chunk in enumerate(chunks):
        meta = chunk.metadata
        assert text[meta["start"] : meta["end"]] == chunk.text
        assert meta["chunk"] == number and meta["document_id"] == "guide.md"
        assert meta["source"] == "guide.md" and meta["lang"] == "en"
        assert chunk.title == "Guide"
    assert chunks[0].metadata["section"] == "Guide"
    assert chunks[-1].metadata["section"] == "Usage"
    assert any(c.metadata.get("section") == "Setup" for c in chunks)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcdefghij ,", min_size=1, max_size=80).map(lambda s: s.strip() + "."),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=8, max_value=60),
    st.integers(min_value=0, max_value=30),
)
def test_chunks_cover_every_sentence_in_order(sentences, chunk_tokens, overlap) -> None:
    text = " ".join(sentences)
    overlap = min(overlap, chunk_tokens - 1)
    spans = chunk_spans(text, ChunkingOptions(chunk_tokens=chunk_tokens, overlap_tokens=overlap))
    covered = [False] * len(text)
    for start, end in spans:
        for i in range(start, end):
            covered[i] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
    starts = [s for s, _ in spans]
    assert starts == sorted(set(starts))  # strictly increasing: always progresses
