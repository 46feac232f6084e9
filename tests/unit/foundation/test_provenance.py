from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragpress.provenance import compose_spans, gap_separator, join_spans, merge_spans, verify
from ragpress.types import CompressedPassage, Passage


def test_gap_separators_follow_what_was_dropped() -> None:
    assert gap_separator("") == ""
    assert gap_separator(" dropped words ") == " "
    assert gap_separator(" line\nnext ") == "\n"
    assert gap_separator("end.\n\nNew paragraph. ") == "\n\n"
    assert gap_separator("沒有空格") == ""


def test_join_spans_rebuilds_sentences() -> None:
    text = "One. Two is gone.\n\nThree."
    assert join_spans(text, [(0, 4), (19, 25)]) == "One.\n\nThree."


def test_verify_rejects_invented_text() -> None:
    source = Passage("alpha beta gamma")
    good = CompressedPassage(source, "alpha gamma", ((0, 5), (11, 16)), 3, 2)
    bad = CompressedPassage(source, "alpha delta", ((0, 5), (11, 16)), 3, 2)
    assert verify(good)
    assert not verify(bad)
    assert not verify(CompressedPassage(source, "x", None, 3, 1))


_text = st.text(alphabet=st.sampled_from(list("ab .\n\t字")), min_size=1, max_size=80)


@st.composite
def _spans(draw: st.DrawFn, text: str) -> list[tuple[int, int]]:
    """Sorted spans with no whitespace at either end, as every compressor returns them."""
    points = sorted(draw(st.sets(st.integers(0, len(text)), max_size=8)))
    stripped = []
    for start, end in zip(points[::2], points[1::2], strict=False):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        stripped.append((start, end))
    return list(merge_spans(stripped))


@given(data=st.data(), text=_text)
def test_composing_two_stages_equals_applying_them_in_turn(data: st.DataObject, text: str) -> None:
    first = data.draw(_spans(text))
    intermediate = join_spans(text, first)
    second = data.draw(_spans(intermediate))
    composed = compose_spans(text, first, second)
    assert join_spans(text, composed) == join_spans(intermediate, second)
