from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ragpress.exceptions import RequestValidationError
from ragpress.retrieval.documents import load_documents

ROOT = Path(__file__).resolve().parents[3]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_reads_markdown_text_and_jsonl_from_a_folder(tmp_path: Path) -> None:
    write(tmp_path / "a.md", '---\ntitle: "From front matter"\nauthor: x\n---\n# Ignored\nBody.')
    write(tmp_path / "sub" / "b.markdown", "Intro line.\n\n# Heading Title\n\nMore.")
    write(tmp_path / "notes_2024.txt", "Plain text.")
    write(
        tmp_path / "c.jsonl",
        '{"id": 7, "title": "T", "text": "Seven.", "url": "u"}\n\n{"text": "No id."}\n',
    )
    records = [
        {
            "id": "q1",
            "question": "?",
            "docs": [{"title": "D0", "text": "Zero."}, {"text": "One.", "is_gold": True}],
        }
    ]
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    write(tmp_path / "image.png", b"\x89PNG")
    write(tmp_path / ".hidden" / "x.md", "secret")
    write(tmp_path / "empty.txt", "   \n")

    found = load_documents(tmp_path)

    by_id = {}
    for d in found.documents:
        assert d.id is not None  # every loaded document gets an id
        by_id[d.id] = d
    assert sorted(by_id) == [
        "7",
        "a.md",
        "c.jsonl:3",
        "notes_2024.txt",
        "q1/0",
        "q1/1",
        "sub/b.markdown",
    ]
    assert by_id["a.md"].title == "From front matter"
    assert by_id["a.md"].text == "# Ignored\nBody."  # front matter is not indexed
    assert by_id["sub/b.markdown"].title == "Heading Title"
    assert by_id["notes_2024.txt"].title == "notes 2024"
    assert by_id["7"].title == "T"
    assert dict(by_id["7"].metadata) == {"url": "u", "source": "c.jsonl", "line": 1}
    assert by_id["q1/1"].metadata["is_gold"] is True
    assert by_id["q1/0"].title == "D0"
    assert found.skipped == ["image.png"]
    assert found.files == 6 and found.empty == 1


def test_a_single_file_can_be_given(tmp_path: Path) -> None:
    path = write(tmp_path / "one.txt", "Just this.")
    found = load_documents(path)
    assert [d.id for d in found.documents] == ["one.txt"]


def test_the_example_handbook_loads() -> None:
    found = load_documents(ROOT / "examples" / "handbook")
    assert len(found.documents) == 7 and not found.skipped


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "ok"}\n{"text": broken}\n', r"c\.jsonl:2 is not valid JSON"),
        (b'["a list"]\n', r"c\.jsonl:1 is a JSON list"),
        (b'{"title": "no text"}\n', r'c\.jsonl:1 has no "text" string'),
        (b'{"text": "x", "title": 5}\n', r'"title" must be a string'),
        (b'{"docs": "nope"}\n', r'"docs" must be a list'),
        (b'{"docs": [{"text": 1}]}\n', r"docs\[0\] has no \"text\" string"),
        (b'{"text": "caf\xe9"}\n', r"c\.jsonl:1 is not UTF-8 \(byte"),
    ],
)
def test_bad_jsonl_names_the_file_line_and_fix(tmp_path: Path, content: bytes, message: str):
    write(tmp_path / "c.jsonl", content)
    with pytest.raises(RequestValidationError, match=message) as info:
        load_documents(tmp_path)
    assert info.value.param is not None and info.value.param.startswith("c.jsonl")


def test_non_utf8_text_file_is_named(tmp_path: Path) -> None:
    write(tmp_path / "latin1.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(RequestValidationError, match=r"latin1\.txt is not UTF-8"):
        load_documents(tmp_path)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    data = gzip.compress(b'{"text": "a"}\n' * 100)
    write(tmp_path / "cut.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(RequestValidationError, match=r"cut\.jsonl\.gz cannot be read"):
        load_documents(tmp_path)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match="does not exist"):
        load_documents(tmp_path / "nope")
