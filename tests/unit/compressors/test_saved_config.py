"""Issue 21: a saved compressor folder cannot switch on ``trust_remote_code``.

Only the caller decides whether a checkpoint may run its own code; a
``ragpress_compressor.json`` that sets it is ignored for that key, with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragpress.compressors.base import CONFIG_FILE, BaseCompressor
from ragpress.exceptions import ConfigurationError, RagpressWarning


class Recording(BaseCompressor):
    """Records its constructor arguments; compresses nothing."""

    name = "recording"
    config_keys = ("model", "trust_remote_code")

    def __init__(self, model: str = "m", trust_remote_code: bool = False) -> None:
        self.model = model
        self.trust_remote_code = trust_remote_code

    def compress(self, query, passages, options, *, analyses=None):
        raise NotImplementedError


def saved(tmp_path: Path, config: Any) -> Path:
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"name": "recording", "config": config}))
    return tmp_path


def test_a_saved_trust_remote_code_is_ignored_with_a_warning(tmp_path: Path) -> None:
    folder = saved(tmp_path, {"model": "other", "trust_remote_code": True})
    with pytest.warns(RagpressWarning, match=r"trust_remote_code=True; ignored.*load\(\)"):
        loaded = Recording.load(folder)
    assert isinstance(loaded, Recording)
    assert loaded.trust_remote_code is False and loaded.model == "other"


def test_the_caller_can_still_allow_it(tmp_path: Path) -> None:
    folder = saved(tmp_path, {"model": "other"})
    loaded = Recording.load(folder, trust_remote_code=True)
    assert isinstance(loaded, Recording) and loaded.trust_remote_code is True


def test_save_never_writes_it(tmp_path: Path) -> None:
    Recording(trust_remote_code=True).save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())["config"]
    assert config == {"model": "m"}
    loaded = Recording.load(tmp_path)  # no warning: nothing to ignore
    assert isinstance(loaded, Recording) and loaded.trust_remote_code is False


def test_a_config_that_is_not_an_object_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'config' must be an object"):
        Recording.load(saved(tmp_path, ["trust_remote_code"]))


@pytest.mark.model
def test_llmlingua2_folder_cannot_allow_remote_code(bert_token_classifier, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor

    LLMLingua2Compressor(bert_token_classifier).save(tmp_path)
    file = tmp_path / CONFIG_FILE
    payload = json.loads(file.read_text())
    assert "trust_remote_code" not in payload["config"]
    payload["config"]["trust_remote_code"] = True
    file.write_text(json.dumps(payload))
    with pytest.warns(RagpressWarning, match="trust_remote_code"):
        loaded = LLMLingua2Compressor.load(tmp_path)
    assert isinstance(loaded, LLMLingua2Compressor) and loaded.trust_remote_code is False
