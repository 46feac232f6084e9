"""``ragpress train-soft`` end to end on a tiny Qwen2-architecture model built from a config."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch
from click.testing import CliRunner, Result
from safetensors.torch import load_file

from ragpress.compressors import load_compressor
from ragpress.compressors.compllm import CompLLMCompressor
from ragpress.types import CompressionOptions, Passage
from tests.support.cli import main
from tests.support.docs import code_blocks, section

pytestmark = pytest.mark.model

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nq_sample.jsonl.gz"


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six QA records in the batch format, two short documents each."""
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:6]
    path = tmp_path_factory.mktemp("qa") / "train.jsonl"
    with path.open("w") as out:
        for row in rows:
            docs = sorted(row["docs"], key=lambda d: not d.get("is_gold"))[:2]
            record = {
                "id": row["id"],
                "question": row["question"],
                "answers": row["answers"],
                "docs": [{"title": d["title"], "text": d["text"][:200]} for d in docs],
            }
            out.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 model with the usual initialisation (std 0.02), the one training starts from."""
    from ragpress.compressors.compllm.synthetic import build_random_checkpoint

    with gzip.open(FIXTURE, "rt", encoding="utf-8") as handle:
        corpus = [d["text"] for line in handle for d in json.loads(line)["docs"]]
    return build_random_checkpoint(tmp_path_factory.mktemp("base"), corpus=corpus)


def train_soft(*args: str) -> Result:
    result = CliRunner().invoke(main, ["train-soft", *args], catch_exceptions=False)
    return result


def common(model: Path) -> list[str]:
    return [
        "--model", str(model), "--lora-rank", "4", "--grad-accum", "1", "--warmup-steps", "2",
        "--lr", "3e-3", "--max-context-tokens", "48", "--max-answer-tokens", "8",
    ]  # fmt: skip


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_training_loss_falls_and_the_adapter_loads(qa_file, base_dir, tmp_path) -> None:
    out = tmp_path / "adapter"
    done = train_soft(str(qa_file), str(out), *common(base_dir), "--steps", "16",
                      "--save-every", "8")  # fmt: skip
    assert done.exit_code == 0, done.output
    curve = losses(out)
    assert len(curve) == 16
    assert sum(curve[-4:]) / 4 < 0.5 * sum(curve[:4]) / 4, curve  # the distillation loss falls
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-0000008",
        "step-0000016",
    ]
    trained = load_compressor("compllm", adapter=str(out))
    untrained = CompLLMCompressor.create(str(base_dir), lora_rank=4)
    docs = [Passage("Paris is the capital of France.", title="Paris")]
    a = trained.compress(None, docs, CompressionOptions()).embeddings
    b = untrained.compress(None, docs, CompressionOptions()).embeddings
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert trained.fingerprint() != untrained.fingerprint()


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
    qa_file, base_dir, tmp_path, monkeypatch
) -> None:
    from ragpress.cli import train_soft as command

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = [str(qa_file), *common(base_dir), "--steps", "6", "--save-every", "3"]
    assert train_soft(args[0], str(straight), *args[1:]).exit_code == 0

    def ctrl_c_after_step_4(self, report) -> None:
        if report.step == 4:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(command._TrainingProgress, "_update", ctrl_c_after_step_4)
        interrupted = CliRunner().invoke(main, ["train-soft", args[0], str(resumed), *args[1:]])
    assert interrupted.exit_code == 1 and "Aborted" in interrupted.output
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step-0000003"]
    again = train_soft(args[0], str(resumed), *args[1:])
    assert again.exit_code == 2 and "--resume" in again.output  # never clobbers a run silently
    assert train_soft(args[0], str(resumed), *args[1:], "--resume").exit_code == 0
    assert losses(resumed) == losses(straight)
    for name in ("adapter_model.safetensors", "projection.safetensors"):
        left, right = load_file(str(straight / name)), load_file(str(resumed / name))
        assert all(torch.equal(left[k], right[k]) for k in left), name


def test_bad_training_data_is_refused_with_the_line(tiny_llm_dir, tmp_path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"question": "q?", "answers": ["a"], "docs": [{"text": "t"}]})
        + "\n"
        + json.dumps({"question": "q?", "docs": [{"text": "t"}]})
        + "\n"
    )
    done = train_soft(str(data), str(tmp_path / "out"), "--model", str(tiny_llm_dir))
    assert done.exit_code == 2
    assert "line 2" in done.output and "--answers self" in done.output
    done = train_soft(str(data), str(tmp_path / "out"))
    assert done.exit_code == 2 and "--model" in done.output


def test_text_commands_refuse_a_soft_method(compllm_adapter_dir, tmp_path) -> None:
    params = json.dumps({"adapter": str(compllm_adapter_dir)})
    done = CliRunner().invoke(
        main,
        ["compress", "-", "-q", "who?", "--method", "compllm"],
        input="Some text.",
        env={"RAGPRESS_COMPRESSION__PARAMS": params},
    )
    assert done.exit_code == 2 and "soft embeddings" in done.output


def test_docs_compllm_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    """The compllm page's offline commands (random checkpoint, train-soft) and Python example."""
    page = "docs/compressors/compllm.md"
    commands = code_blocks(section(page, "## Train an adapter"), "bash")[0].splitlines()
    (example,) = code_blocks(section(page, "## Use it"), "python")
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    (tmp_path / "tests" / "fixtures" / FIXTURE.name).symlink_to(FIXTURE)
    monkeypatch.chdir(tmp_path)
    build, train = (shlex.split(line) for line in commands)
    assert build[0] == ".venv/bin/python" and train[:2] == [".venv/bin/ragpress", "train-soft"]
    subprocess.run([sys.executable, *build[1:]], check=True)  # this interpreter, same venv
    result = train_soft(*train[2:])
    assert result.exit_code == 0, result.output
    exec(compile(example, page, "exec"), {})
    out = capsys.readouterr().out.splitlines()
    counts = re.fullmatch(r"(\d+) tokens -> (\d+)", out[0])
    assert counts is not None, out
    before, after = map(int, counts.groups())
    assert before > after > 0  # then the answer streams (random weights: any text, maybe none)
