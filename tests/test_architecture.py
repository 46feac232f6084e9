"""Imports flow one way: foundation -> compressors/retrieval/cache -> middleware -> CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "ragpress.compressors": ROOT / "compressors",
    "ragpress.retrieval": ROOT / "retrieval",
    "ragpress.cache": ROOT / "cache",
    "ragpress.middleware": ROOT / "middleware",
}
FOUNDATION = [
    "types",
    "exceptions",
    "_optional",
    "config",
    "hashing",
    "hub",
    "provenance",
    "segmentation",
    "tokens",
]
DOMAINS = {"ragpress.compressors", "ragpress.retrieval", "ragpress.cache"}
ENTRY_POINTS = {"ragpress.cli", "ragpress.commands", "ragpress.__main__"}
FORBIDDEN = {
    **{
        d: (DOMAINS - {d}) | {"ragpress.middleware", "ragpress.config", *ENTRY_POINTS}
        for d in DOMAINS
    },
    "ragpress.middleware": ENTRY_POINTS,
    **{f"ragpress.{m}": {*DOMAINS, "ragpress.middleware", *ENTRY_POINTS} for m in FOUNDATION},
}
HEAVY = (
    "torch",
    "transformers",
    "faiss",
    "redis",
    "litestar",
    "sentence_transformers",
    "numpy",
    "peft",
    "httpx",
    "PIL",
)


def _files(package: str) -> list[Path]:
    if package in FOLDERS:
        return sorted(FOLDERS[package].rglob("*.py"))
    return [ROOT / "ragpress" / f"{package.split('.', 1)[1]}.py"]


def _imports(path: Path, *, top_level_only: bool = False) -> list[str]:
    """Modules imported at run time (imports under `if TYPE_CHECKING:` do not count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import) and not (top_level_only and nested):
                found.extend(alias.name for alias in child.names)
            elif (
                isinstance(child, ast.ImportFrom)
                and child.module
                and not (top_level_only and nested)
            ):
                found.append(child.module)
            visit(child, inner)

    visit(tree, False)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_respect_layers(package: str) -> None:
    offending = [
        (str(path.relative_to(ROOT)), module)
        for path in _files(package)
        for module in _imports(path)
        if module == "ragpress"
        or any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert not offending, f"{package} crosses a layer boundary: {offending}"


@pytest.mark.parametrize("module", FOUNDATION)
def test_foundation_has_no_heavy_top_level_imports(module: str) -> None:
    path = ROOT / "ragpress" / f"{module}.py"
    heavy = [m for m in _imports(path, top_level_only=True) if m.split(".")[0] in HEAVY]
    assert not heavy, f"ragpress.{module} imports {heavy} at import time"


def test_environment_is_read_only_in_config() -> None:
    readers = []
    for path in [
        *ROOT.joinpath("ragpress").glob("*.py"),
        *ROOT.joinpath("ragpress/commands").glob("*.py"),
        *(p for f in FOLDERS.values() for p in f.rglob("*.py")),
    ]:
        text = path.read_text()
        if ("os.environ" in text or "os.getenv" in text) and path.name != "config.py":
            readers.append(str(path.relative_to(ROOT)))
    assert readers == [], f"only ragpress/config.py reads the environment: {readers}"


def test_domain_folders_are_linked_into_the_package() -> None:
    for name in ("compressors", "retrieval", "cache", "middleware"):
        link = ROOT / "ragpress" / name
        assert link.is_symlink() and Path(link.readlink()) == Path("..") / name
