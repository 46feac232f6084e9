"""Imports flow one way: foundation -> domains -> pipeline -> batch/serving -> front ends -> CLI.

Layers, bottom up (``CONTRIBUTING.md``, "Layout and import layers"):

* foundation: ``ragpress/*.py`` (types, exceptions, config, tokens, ...);
* domains: ``ragpress.compressors``, ``ragpress.retrieval``, ``ragpress.cache`` (independent
  siblings that meet only in the middleware);
* ``ragpress.middleware.pipeline``;
* ``ragpress.middleware.generation`` (answering from soft prompts; builds on the pipeline);
* ``ragpress.middleware.batch``, ``ragpress.middleware.serving`` and
  ``ragpress.middleware.langchain``;
* ``ragpress.middleware.evaluation`` (answer-level evaluation; builds on the pipeline and the
  batch record format);
* ``ragpress.middleware.proxy``;
* ``ragpress.cli``.

Only imports at run time count: ``if TYPE_CHECKING:`` blocks are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = [
    p.stem for p in sorted((ROOT / "ragpress").glob("*.py")) if not p.stem.startswith("__")
]
DOMAINS = {"ragpress.compressors", "ragpress.retrieval", "ragpress.cache"}
MIDDLEWARE = {
    f"ragpress.middleware.{name}"
    for name in ("pipeline", "generation", "batch", "evaluation", "serving", "langchain", "proxy")
}
ENTRY_POINTS = {"ragpress.cli", "ragpress.__main__"}

# What each middleware part may not import (beyond the entry points, which none may).
_ABOVE: dict[str, set[str]] = {
    "pipeline": MIDDLEWARE - {"ragpress.middleware.pipeline"},
    "generation": MIDDLEWARE - {"ragpress.middleware.pipeline", "ragpress.middleware.generation"},
    "batch": MIDDLEWARE - {"ragpress.middleware.pipeline", "ragpress.middleware.batch"},
    "evaluation": MIDDLEWARE
    - {
        "ragpress.middleware.pipeline",
        "ragpress.middleware.batch",
        "ragpress.middleware.evaluation",
    },
    "serving": {
        "ragpress.middleware.batch",
        "ragpress.middleware.evaluation",
        "ragpress.middleware.langchain",
        "ragpress.middleware.proxy",
    },
    "langchain": MIDDLEWARE - {"ragpress.middleware.pipeline", "ragpress.middleware.langchain"},
    "proxy": {
        "ragpress.middleware.batch",
        "ragpress.middleware.evaluation",
        "ragpress.middleware.langchain",
    },
}
FORBIDDEN: dict[str, set[str]] = {
    **{
        d: (DOMAINS - {d}) | {"ragpress.middleware", "ragpress.config", *ENTRY_POINTS}
        for d in DOMAINS
    },
    **{f"ragpress.middleware.{part}": above | ENTRY_POINTS for part, above in _ABOVE.items()},
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


def _folder(package: str) -> Path:
    parts = package.split(".")[1:]
    linked = parts[0] in ("compressors", "middleware", "retrieval", "cache")
    return ROOT.joinpath(*parts) if linked else ROOT.joinpath("ragpress", *parts)


def _files(package: str) -> list[Path]:
    folder = _folder(package)
    if folder.is_dir():
        return sorted(folder.rglob("*.py"))
    return [folder.with_suffix(".py")]


def _module_name(path: Path) -> str:
    """``ragpress.x.y`` for a file of the package (the four folders are linked into it)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] != "ragpress":
        parts.insert(0, "ragpress")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


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
                found.extend(
                    [child.module]
                    + [f"{child.module}.{alias.name}" for alias in child.names if alias.name != "*"]
                )
            visit(child, inner)

    visit(tree, False)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _source_files() -> list[Path]:
    return [
        *sorted((ROOT / "ragpress").rglob("*.py")),
        *(
            p
            for f in ("compressors", "middleware", "retrieval", "cache")
            for p in (ROOT / f).rglob("*.py")
        ),
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_respect_layers(package: str) -> None:
    offending = sorted(
        {
            (str(path.relative_to(ROOT)), module)
            for path in _files(package)
            for module in _imports(path)
            if module == "ragpress" or any(_within(module, f) for f in FORBIDDEN[package])
        }
    )
    assert not offending, f"{package} crosses a layer boundary: {offending}"


def test_every_middleware_part_has_a_layer() -> None:
    parts = {p.name for p in (ROOT / "middleware").iterdir() if (p / "__init__.py").is_file()}
    assert {f"ragpress.middleware.{p}" for p in parts} == MIDDLEWARE


@pytest.mark.parametrize(
    "folder", ["ragpress", "compressors", "middleware", "retrieval", "cache", "bench"]
)
def test_private_modules_are_imported_only_inside_their_package(folder: str) -> None:
    """``a.b._c`` is imported only by modules under ``a.b`` (its family or front end)."""
    offending = []
    for path in (ROOT / folder).rglob("*.py"):
        importer = _module_name(path) if folder != "bench" else f"bench.{path.stem}"
        for module in _imports(path):
            parts = module.split(".")
            private = next(
                (i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")),
                None,
            )
            if not module.startswith("ragpress.") or private is None:
                continue
            owner = ".".join(parts[:private])
            if not _within(importer, owner):
                offending.append((str(path.relative_to(ROOT)), module))
    assert not offending, f"private modules imported from outside their package: {offending}"


@pytest.mark.parametrize("module", FOUNDATION)
def test_foundation_has_no_heavy_top_level_imports(module: str) -> None:
    path = ROOT / "ragpress" / f"{module}.py"
    heavy = [m for m in _imports(path, top_level_only=True) if m.split(".")[0] in HEAVY]
    assert not heavy, f"ragpress.{module} imports {heavy} at import time"


def test_environment_is_read_only_in_config() -> None:
    readers = [
        str(path.relative_to(ROOT))
        for path in _source_files()
        if ("os.environ" in (text := path.read_text()) or "os.getenv" in text)
        and path != ROOT / "ragpress" / "config.py"
    ]
    assert readers == [], f"only ragpress/config.py reads the environment: {readers}"


def test_domain_folders_are_linked_into_the_package() -> None:
    for name in ("compressors", "retrieval", "cache", "middleware"):
        link = ROOT / "ragpress" / name
        assert link.is_symlink() and Path(link.readlink()) == Path("..") / name
