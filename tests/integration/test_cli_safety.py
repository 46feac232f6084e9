"""Issue 21: the CLI never destroys its input and answers bad paths with clear usage errors.

Each case here once ended in an emptied input file or a raw Python traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.support.cli import main

RECORD = {"id": "q1", "question": "Where?", "docs": [{"text": "Paris is in France. It is big."}]}
LINE = json.dumps(RECORD) + "\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(LINE)
    return path


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# -- item 1: OUT is IN --------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_out_equal_to_in_is_refused_and_the_input_kept(source: Path, flag: str) -> None:
    result = invoke("batch", str(source), str(source), flag)
    assert_usage_error(result, "same file")
    assert "pass --resume" not in result.output and "--overwrite to replace" not in result.output
    assert source.read_text() == LINE


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_out_that_is_a_link_to_in_is_refused(source: Path, tmp_path: Path, flag: str) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)
    for args in ((str(link), str(source)), (str(source), str(link))):
        assert_usage_error(invoke("batch", *args, flag), "same file")
    assert source.read_text() == LINE


def test_out_that_is_a_hard_link_or_a_dotted_path_to_in_is_refused(
    source: Path, tmp_path: Path
) -> None:
    hard = tmp_path / "hard.jsonl"
    hard.hardlink_to(source)
    assert_usage_error(invoke("batch", str(source), str(hard), "--overwrite"), "same file")
    dotted = tmp_path / "sub" / ".." / "in.jsonl"
    (tmp_path / "sub").mkdir()
    assert_usage_error(invoke("batch", str(source), str(dotted), "--overwrite"), "same file")
    assert source.read_text() == LINE


# -- item 12: bad paths -------------------------------------------------------------------------


def test_batch_out_in_a_missing_folder(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "out.jsonl"
    assert_usage_error(invoke("batch", str(source), str(target)), "does not exist", "mkdir -p")


def test_batch_out_under_a_file(source: Path) -> None:
    target = source / "out.jsonl"  # the "folder" is the input file
    assert_usage_error(invoke("batch", str(source), str(target)), "is a file, not a folder")


def test_batch_out_that_is_a_folder(source: Path, tmp_path: Path) -> None:
    folder = tmp_path / "outdir"
    folder.mkdir()
    result = invoke("batch", str(source), str(folder), "--overwrite")
    assert_usage_error(result, "is a folder", "names the output file")


def test_batch_in_that_is_a_folder(tmp_path: Path) -> None:
    result = invoke("batch", str(tmp_path), str(tmp_path / "out.jsonl"))
    assert_usage_error(result, "is a folder, not a file")


def test_compress_file_that_is_a_folder(tmp_path: Path) -> None:
    assert_usage_error(invoke("compress", str(tmp_path)), "is a folder, not a file")


def test_eval_records_missing_or_a_folder(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    assert_usage_error(invoke("eval", str(tmp_path / "missing.jsonl"), out), "does not exist")
    assert_usage_error(invoke("eval", str(tmp_path), out), "is a folder, not a file")


def test_eval_out_dir_that_is_a_file_or_under_one(source: Path) -> None:
    assert_usage_error(invoke("eval", str(source), str(source)), "must be a folder")
    result = invoke("eval", str(source), str(source / "run"))
    assert_usage_error(result, "is a file, not a folder")


def test_index_build_out_under_a_file(source: Path) -> None:
    result = invoke("index", "build", str(source), str(source / "index"))
    assert_usage_error(result, "is a file, not a folder")


# -- item 12: a pickle checkpoint that carries code -------------------------------------------


class _Payload:
    """Unpickling this would create a file; ``weights_only`` loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.model
def test_a_pickle_checkpoint_with_code_is_refused_clearly(
    bert_token_classifier: str, source: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    folder = tmp_path / "bert-base-multilingual-cased-pickled"
    shutil.copytree(bert_token_classifier, folder)
    weights: dict[str, Any] = dict(load_file(str(folder / "model.safetensors")))
    marker = tmp_path / "code-ran"
    weights["payload"] = _Payload(marker)
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    target = tmp_path / "out.jsonl"
    result = invoke(
        "batch", str(source), str(target), "--method", "llmlingua2", "--model", str(folder)
    )
    assert_usage_error(result, "pickle weights file", "never runs code", "safetensors")
    assert "weights_only" not in result.output  # not torch's advice to switch the guard off
    assert not marker.exists()
