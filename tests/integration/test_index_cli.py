"""`ragpress index build` / `query` with the real embedded MiniLM, run in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.cli import main

pytestmark = pytest.mark.model

HANDBOOK = Path(__file__).resolve().parents[2] / "examples" / "handbook"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("cli")
    docs = root / "docs"
    shutil.copytree(HANDBOOK, docs)
    out = root / "index"
    result = CliRunner().invoke(main, ["index", "build", str(docs), str(out)])
    assert result.exit_code == 0, result.output
    return docs, out, result.stderr


def test_build_writes_an_index_and_reports_what_it_did(built) -> None:
    _, out, summary = built
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "index.faiss", "passages.jsonl"]
    assert "indexed 7 documents from 5 files as 12 chunks" in summary
    assert "12 embedded, 0 reused" in summary and "flat index of dimension 384" in summary
    config = json.loads((out / "config.json").read_text())
    assert config["embedder"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_query_prints_the_best_chunks(built) -> None:
    _, out, _ = built
    result = CliRunner().invoke(
        main, ["index", "query", str(out), "How long does a card refund take?", "-k", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1. [") and "refunds.md#1" in lines[0]
    assert "When the money arrives" in lines[0] and "5 to 7 business days" in lines[1]
    assert lines[2].startswith("2. [") and len(lines) == 4

    as_json = CliRunner().invoke(
        main, ["index", "query", str(out), "gift card validity", "-k", "1", "--json"]
    )
    hit = json.loads(as_json.stdout)
    assert hit["id"] == "faq-gift-cards#0" and hit["rank"] == 1
    assert hit["metadata"]["category"] == "payments" and hit["metadata"]["source"] == "faq.jsonl"


def test_rebuild_embeds_only_changed_chunks(built, tmp_path) -> None:
    docs, out, _ = built
    copy = tmp_path / "index"
    shutil.copytree(out, copy)
    shipping = docs / "shipping.md"
    original = shipping.read_text()
    try:
        shipping.write_text(original + "\nParcels to Corsica take one extra day.\n")
        result = CliRunner().invoke(main, ["index", "build", str(docs), str(copy)])
    finally:
        shipping.write_text(original)
    assert result.exit_code == 0, result.output
    assert "1 embedded, 11 reused" in result.stderr


def test_an_index_from_another_model_needs_overwrite(built, tmp_path) -> None:
    docs, out, _ = built
    copy = tmp_path / "index"
    shutil.copytree(out, copy)
    config = json.loads((copy / "config.json").read_text())
    config["embedder"] = {"fingerprint": "0123456789abcdef", "model": "some/other-model"}
    (copy / "config.json").write_text(json.dumps(config))
    refused = CliRunner().invoke(main, ["index", "build", str(docs), str(copy)])
    assert refused.exit_code == 1
    assert "some/other-model" in refused.stderr and "--overwrite" in refused.stderr
    replaced = CliRunner().invoke(
        main, ["index", "build", str(docs), str(copy), "--overwrite", "--quiet"]
    )
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((copy / "config.json").read_text())["embedder"]["model"] != (
        "some/other-model"
    )
    query = CliRunner().invoke(main, ["index", "query", str(copy), "warranty", "-k", "1"])
    assert "warranty.md" in query.stdout


def test_bad_input_is_named_before_any_work(tmp_path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kb.jsonl").write_text('{"text": "fine"}\n{"title": "no text here"}\n')
    result = CliRunner().invoke(main, ["index", "build", str(docs), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert 'kb.jsonl:2 has no "text" string' in result.stderr
    assert not (tmp_path / "out").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    (docs / "kb.jsonl").write_text('{"text": "fine"}\n')
    result = CliRunner().invoke(main, ["index", "build", str(docs), str(busy)])
    assert result.exit_code == 2 and "holds no ragpress index" in result.stderr

    missing = CliRunner().invoke(main, ["index", "query", str(tmp_path / "nope"), "q"])
    assert missing.exit_code == 1 and "ragpress index build" in missing.stderr
