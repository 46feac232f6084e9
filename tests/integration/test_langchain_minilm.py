"""The LangChain pieces and the retrieving pipeline on the real embedded MiniLM; the examples of
the LangChain and Python guides (``docs/guides/``) and the README's Python quick start run
exactly as written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from langchain_classic.retrievers import ContextualCompressionRetriever

from ragpress.config import RagpressSettings
from ragpress.middleware.langchain import RagpressDocumentCompressor, RagpressRetriever
from ragpress.middleware.pipeline.factory import build_pipeline
from ragpress.retrieval.chunking import chunk_passages
from ragpress.retrieval.documents import load_documents
from ragpress.retrieval.faiss import FaissRetriever
from tests.support.cli import main
from tests.support.docs import code_blocks, section

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
LANGCHAIN = "docs/guides/langchain.md"
PYTHON = "docs/guides/python.md"


@pytest.fixture(scope="module")
def index_dir(minilm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chunks = chunk_passages(load_documents(ROOT / "examples" / "handbook").documents)
    folder = tmp_path_factory.mktemp("handbook-index")
    FaissRetriever.build(chunks, minilm).save(folder)
    return folder


def test_contextual_compression_retriever_on_minilm(minilm, index_dir) -> None:
    pipeline = build_pipeline(RagpressSettings(_env_file=None), embedder=minilm)
    try:
        ccr = ContextualCompressionRetriever(
            base_compressor=RagpressDocumentCompressor(pipeline=pipeline, target_ratio=3),
            base_retriever=RagpressRetriever.from_index(index_dir, minilm, k=4),
        )
        docs = ccr.invoke("How long does a card refund take?")
    finally:
        pipeline.close()
    assert docs[0].id == "refunds.md#1"
    assert "5 to 7 business days" in docs[0].page_content
    before = sum(d.metadata["ragpress"]["tokens_before"] for d in docs)
    after = sum(d.metadata["ragpress"]["tokens_after"] for d in docs)
    assert 2.5 <= before / after <= 3.5
    assert all(d.metadata["source"] and "retrieval_score" in d.metadata["ragpress"] for d in docs)


async def test_pipeline_retrieves_from_the_configured_index(minilm, index_dir) -> None:
    settings = RagpressSettings(_env_file=None, retrieval={"index_dir": index_dir, "top_k": 3})
    pipeline = build_pipeline(settings, embedder=minilm)
    try:
        result = await pipeline.acompress("Who pays customs duties for Switzerland?")
    finally:
        await pipeline.aclose()
    assert len(result.passages) == 3 and "retrieve" in result.timings_ms
    assert result.passages[0].id == "shipping.md#1"
    assert "customs duties" in result.context()


def _block(page: str, heading: str, language: str) -> str:
    (block,) = code_blocks(section(page, heading), language)
    return block


def test_guide_langchain_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    for line in _block(LANGCHAIN, "## A retrieval chain", "bash").splitlines():
        if line.startswith("ragpress "):
            result = CliRunner().invoke(main, shlex.split(line)[1:])
            assert result.exit_code == 0, result.output
    exec(compile(_block(LANGCHAIN, "## A retrieval chain", "python"), LANGCHAIN, "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Within 5 to 7 business days."
    saved = next(line for line in out if line.startswith("tokens: "))
    before, after, saved_n = map(int, re.findall(r"(\d+) -> (\d+), (\d+) saved", saved)[0])
    assert before - after == saved_n > 0
    assert any("refunds.md#1 refunds.md" in line for line in out)
    assert "5 to 7 business days" in "\n".join(out)


def test_guide_agent_example_runs_as_written(capsys) -> None:
    exec(compile(_block(LANGCHAIN, "## Agents", "python"), LANGCHAIN, "exec"), {})
    assert capsys.readouterr().out.strip() == "Done."


def test_guide_python_example_runs_as_written(capsys) -> None:
    code = _block(PYTHON, "## Compress documents for a question", "python")
    exec(compile(code, PYTHON, "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert "He discovered X-rays in 1895" in out[0] or "first Nobel Prize" in out[0]
    before, after, ratio = out[1].split()
    assert int(before) > int(after) > 0 and float(ratio) >= 1.5
    assert out[2].startswith("Röntgen {'url': 'https://...'} ((")
    assert out[3].startswith("Bread {} ")


def test_readme_python_quick_start_runs_as_written(capsys) -> None:
    exec(compile(_block("README.md", "### Python", "python"), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert "He discovered X-rays in 1895" in out[0] or "first Nobel Prize" in out[0]
    before, arrow, after, unit = next(line for line in out if line.endswith(" tokens")).split()
    assert arrow == "->" and unit == "tokens" and int(before) > int(after) > 0
