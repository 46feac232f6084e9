"""The visual package's public surface, import cost and guide example stay true."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docs import code_blocks, section

ROOT = Path(__file__).resolve().parents[4]
MODULES = [
    "ragpress.compressors.visual.api",
    "ragpress.compressors.visual.api.costs",
    "ragpress.compressors.visual.api.layout",
    "ragpress.compressors.visual.api.image",
    "ragpress.compressors.visual.api.ocr",
    "ragpress.compressors.visual.api.pdf",
    "ragpress.compressors.visual.api.parts",
    "ragpress.compressors.visual.api.documents",
    "ragpress.compressors.visual.vlm.reducers",
    "ragpress.compressors.visual.vlm.budgets",
    "ragpress.compressors.visual.vlm.hooks",
    "ragpress.compressors.visual.vlm.llava_next",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert all(hasattr(module, symbol) for symbol in exported)
    public = {
        k
        for k, v in vars(module).items()
        if not k.startswith("_") and getattr(v, "__module__", None) == name and callable(v)
    }
    assert public <= exported, public - exported


def test_package_import_is_light(tmp_path: Path) -> None:
    code = (
        "import sys, ragpress.compressors.visual.api as v; v.cost_model_for('gpt-4o'); "
        "print([m for m in ('PIL', 'numpy', 'torch', 'transformers', 'rapidocr') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_guide_image_example_runs_as_written() -> None:
    (code,) = code_blocks(section("docs/guides/visual.md", "## Images for API models"), "python")
    comment = re.search(r"^# (.+)$", code, re.M)
    assert comment is not None, "the example ends with its expected output as a comment"
    expected = comment.group(1)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
