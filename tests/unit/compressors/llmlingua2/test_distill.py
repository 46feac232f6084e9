"""Distillation labels: alignment of (original, compressed) pairs and the quality filters."""

from __future__ import annotations

from ragpress.compressors.llmlingua2.distill import (
    DistilledPair,
    chunk_for_teacher,
    filter_pairs,
    read_pairs,
)
from ragpress.compressors.llmlingua2.labels import align_words

ORIGINAL = "The committee met on Monday, and it agreed to fund the new library."


def test_pure_deletion_labels_the_kept_words() -> None:
    alignment = align_words(ORIGINAL, "committee met Monday, agreed fund new library.")
    words = [ORIGINAL[s:e] for s, e in alignment.spans]
    kept = [w for w, label in zip(words, alignment.labels, strict=True) if label]
    assert kept == ["committee", "met", "Monday", "agreed", "fund", "new", "library", "."]
    assert "," not in words  # commas are ignored, as in the paper
    assert alignment.variation_rate == 0 and alignment.alignment_gap == 0


def test_matching_is_case_insensitive_and_in_order() -> None:
    alignment = align_words("the cat saw the dog", "The dog")
    assert alignment.labels == (1, 0, 0, 0, 1)


def test_rewrites_raise_variation_and_reordering_raises_the_gap() -> None:
    rewritten = align_words(ORIGINAL, "committee convened Monday, approved library funding.")
    assert rewritten.variation_rate > 0.4
    reordered = align_words(ORIGINAL, "library new fund agreed Monday met committee")
    assert reordered.alignment_gap > 0.5 and reordered.variation_rate == 0


def test_filter_drops_the_worst_pairs_and_degenerate_ones() -> None:
    clean = [DistilledPair.from_pair(ORIGINAL, "committee met Monday fund library")] * 18
    rewrite = DistilledPair.from_pair(ORIGINAL, "committee convened Monday approved funding")
    reorder = DistilledPair.from_pair(ORIGINAL, "library fund Monday met committee")
    everything = DistilledPair.from_pair(ORIGINAL, ORIGINAL)  # nothing dropped: no signal
    kept = filter_pairs([*clean, rewrite, reorder, everything])
    assert rewrite not in kept and reorder not in kept and everything not in kept
    assert len(kept) == 18


def test_pairs_roundtrip_and_plain_pairs_are_labelled(tmp_path) -> None:
    pair = DistilledPair.from_pair(ORIGINAL, "committee met Monday")
    store = tmp_path / "pairs.jsonl"
    plain = '{"original": "a b c", "compressed": "a c"}'
    store.write_text(pair.to_json() + "\n" + plain + "\n" + '{"original": "cut sh')
    first, second = read_pairs(store)  # the truncated last line is skipped
    assert first == pair
    assert second.labels == (1, 0, 1)


def test_teacher_chunks_stay_under_the_token_limit() -> None:
    text = " ".join(f"Sentence number {i} talks about item {i}." for i in range(200))
    chunks = chunk_for_teacher(text, max_tokens=100)
    assert len(chunks) > 5
    assert all(len(c.split()) < 100 for c in chunks)
    assert " ".join(chunks).split() == text.split()
