"""The wheel carries every subpackage reached through the symlinks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "tests",
    "bench",
)


def test_wheel_contains_every_subpackage(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=IGNORED)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "-o",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("ragpress-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"ragpress/{path.relative_to(ROOT).as_posix()}"
        for folder in ("compressors", "retrieval", "cache", "middleware")
        for path in (ROOT / folder).rglob("*.py")
    }
    assert expected - names == set()
    assert "ragpress/py.typed" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    for extra in ("cli", "embedders", "sentence-selection", "redis", "exit", "compllm", "all"):
        assert f"Provides-Extra: {extra}" in text
