from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import ragpress

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = ["types", "exceptions", "config", "tokens", "segmentation", "provenance"]
PACKAGES = sorted(
    "ragpress." + ".".join(init.parent.relative_to(ROOT).parts)
    for folder in ("compressors", "middleware", "retrieval", "cache")
    for init in (ROOT / folder).rglob("__init__.py")
)
MODULES = ["ragpress", *(f"ragpress.{m}" for m in FOUNDATION), *PACKAGES]
"""Every package's ``__init__`` (its public face) and the foundation modules."""


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))  # order is kept by ruff's RUF022
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.{symbol} is in __all__ but missing"
    public = {
        k
        for k, v in vars(module).items()
        if not k.startswith("_") and getattr(v, "__module__", name) == name and callable(v)
    }
    assert public <= set(exported), (
        f"{name} defines public names not in __all__: {public - set(exported)}"
    )


def test_version_is_exposed() -> None:
    assert ragpress.__version__.count(".") == 2


def test_every_registered_compressor_resolves_or_names_its_extra() -> None:
    from ragpress.compressors import available_compressors, compressor_class
    from ragpress.exceptions import MissingDependencyError

    for name in available_compressors():
        try:
            cls = compressor_class(name)
        except MissingDependencyError:
            continue
        assert cls.name == name
