"""Fixtures shared by the compressor tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def exit_classifier(tiny_gemma_dir):
    """The tiny Gemma as an ExitClassifier; torch runs on one thread while the module uses it."""
    from ragpress.compressors.exit.model import ExitClassifier
    from tests.support.exit_tiny import one_torch_thread

    with one_torch_thread():
        yield ExitClassifier.from_pretrained(str(tiny_gemma_dir))
