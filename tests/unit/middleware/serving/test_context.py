from __future__ import annotations

import json

from ragpress.middleware.serving.context import find_marked, has_markers, replace_pieces


def test_a_block_without_documents_is_one_document_trimmed_of_whitespace():
    text = "Intro <context>\n  Alpha one. Beta two.\n</context> Which beta?"
    marked = find_marked(text)
    assert [text[p.start : p.end] for p in marked.pieces] == ["Alpha one. Beta two."]
    assert marked.outside == "Intro Which beta?"
    assert marked.unclosed == 0


def test_document_elements_are_separate_documents_with_titles_and_ids():
    text = (
        "<context><document title=\"Curie &amp; co\" id='7'>Marie. Pierre.</document>\n"
        'between <DOC name="Bread">Flour.</DOC></context>Q?'
    )
    marked = find_marked(text)
    assert [(text[p.start : p.end], p.title, p.id) for p in marked.pieces] == [
        ("Marie. Pierre.", "Curie & co", "7"),
        ("Flour.", "Bread", None),
    ]
    assert marked.outside == "Q?"


def test_replacing_pieces_keeps_every_other_byte():
    text = '<context attr="x"><document title="A"> one two </document>|<doc>three</doc></context>!'
    marked = find_marked(text)
    out = replace_pieces(text, marked.pieces, ["ONE", ""])
    assert out == '<context attr="x"><document title="A"> ONE </document>|<doc></doc></context>!'
    assert (
        replace_pieces(text, marked.pieces, [text[p.start : p.end] for p in marked.pieces]) == text
    )


def test_several_blocks_and_an_unclosed_tag():
    text = "<context>A.</context> and <Context>B.</context> but <context>C."
    marked = find_marked(text)
    assert [text[p.start : p.end] for p in marked.pieces] == ["A.", "B."]
    assert marked.unclosed == 1


def test_raw_body_check_finds_plain_and_json_escaped_tags():
    assert has_markers(json.dumps({"content": "<context>x</context>"}).encode())
    assert has_markers(b'{"content":"\\u003ccontext\\u003ex\\u003c/context\\u003e"}')
    assert has_markers(b'{"content":"<CONTEXT>x</CONTEXT>"}')
    assert not has_markers(b'{"content":"no markers, just context words"}')
