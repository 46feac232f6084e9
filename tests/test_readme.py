"""The README's commands stay true, its links resolve, and its quick starts run as written.

The proxy and Python quick starts run in ``tests/integration/test_readme_proxy.py`` and
``tests/integration/test_langchain_minilm.py``; the settings table moved to the configuration
page (``tests/test_docs.py``).
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.docs import code_blocks, section

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert match is not None, f"no bash block after {heading!r}"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = _block_after("Set up and pass the tests")
    assert "pytest" in command and ".venv" in command
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci


def test_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 250, "move the detail to a page under docs/"


def test_readme_links_resolve() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links to the documentation"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_says_why_each_core_dependency_was_chosen() -> None:
    table = section("README.md", "## Dependencies, and why")
    for package in ("pydantic", "anyio", "tiktoken", "sentencex", "cachetools"):
        assert f"| {package}" in table or f", {package}" in table, package


@pytest.mark.model
def test_readme_batch_quick_start_runs_as_written(tmp_path, monkeypatch) -> None:
    from tests.support.cli import main

    (command,) = code_blocks(section("README.md", "### Batch"), "bash")
    args = shlex.split(command)
    assert args[:2] == [".venv/bin/ragpress", "batch"]
    fixture = ROOT / args[2]
    (tmp_path / args[2]).parent.mkdir(parents=True)
    (tmp_path / args[2]).symlink_to(fixture)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args[1:])
    assert result.exit_code == 0, result.output
    with gzip.open(fixture, "rt") as source:
        inputs = [json.loads(line) for line in source]
    outputs = [json.loads(line) for line in (tmp_path / args[3]).read_text().splitlines()]
    assert [o["id"] for o in outputs] == [i["id"] for i in inputs]
    assert all(o["error"] is None and o["docs"][0]["spans"] is not None for o in outputs)
    before = sum(o["stats"]["tokens_before"] for o in outputs)
    after = sum(o["stats"]["tokens_after"] for o in outputs)
    assert 2.5 <= before / after <= 3.5
