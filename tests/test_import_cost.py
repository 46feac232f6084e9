from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = (
    "torch",
    "transformers",
    "faiss",
    "redis",
    "litestar",
    "sentence_transformers",
    "numpy",
    "tiktoken",
    "sentencex",
    "click",
    "rich",
    "onnxruntime",
)


def test_import_ragpress_stays_light(tmp_path: Path) -> None:
    code = f"import sys, ragpress; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_cli_help_does_not_load_models(tmp_path: Path) -> None:
    code = (
        "import sys; from click.testing import CliRunner; from ragpress.cli import main; "
        "r = CliRunner().invoke(main, ['batch', '--help']); assert r.exit_code == 0; "
        "print([m for m in ('torch', 'sentence_transformers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
