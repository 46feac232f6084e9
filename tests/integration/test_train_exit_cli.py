"""``ragpress train-exit`` end to end, then the trained adapter through ``ragpress compress``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")

from click.testing import CliRunner

from tests.support.cli import main

pytestmark = pytest.mark.model  # loads the tiny checkpoint the tests build
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MUSIQUE = FIXTURES / "musique_sample.jsonl.gz"  # 6 MuSiQue records, CC BY 4.0


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    from tests.support.exit_tiny import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def trained(tiny_gemma_dir, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("exit-adapter")
    dump = out / "examples.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "train-exit",
            str(MUSIQUE),
            "--base-model",
            str(tiny_gemma_dir),
            "--output",
            str(out / "adapter"),
            "--lora-r",
            "8",
            "--lora-alpha",
            "16",
            "--learning-rate",
            "1e-2",
            "--batch-size",
            "8",
            "--grad-accum",
            "1",
            "--epochs",
            "4",
            "--max-prompt-tokens",
            "768",
            "--validation-size",
            "1",
            "--dump-data",
            str(dump),
            "--seed",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    return out / "adapter", dump


def test_training_writes_a_peft_adapter_that_learned_the_labels(trained) -> None:
    from ragpress.compressors.exit.model import ExitClassifier

    adapter, dump = trained
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        p.name for p in adapter.iterdir()
    }
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()
    report = json.loads((adapter / "ragpress_exit_training.json").read_text())["report"]
    # The loss starts near the random model's and drops as the adapter learns to answer.
    assert report["loss_last"] < 0.5 * report["loss_first"]
    assert report["validation"]["examples"] > 0
    examples = [json.loads(line) for line in dump.read_text().splitlines()]
    kinds = Counter(e["kind"] for e in examples)
    assert kinds["positive"] == 2 * kinds["hard_negative"] == 2 * kinds["random_negative"] > 0
    # Loaded like the published adapter (adapter_config.json -> base), it separates the
    # training examples it was fitted on.
    classifier = ExitClassifier.from_pretrained(str(adapter))
    groups = [
        classifier.fit(e["query"], e["context"], [e["sentence"]], max_prompt_tokens=768)
        for e in examples
    ]
    scores = [s[0] for s in classifier.score(groups)]
    yes = [p for p, e in zip(scores, examples, strict=True) if e["label"]]
    no = [p for p, e in zip(scores, examples, strict=True) if not e["label"]]
    assert sum(yes) / len(yes) > sum(no) / len(no) + 0.2


def test_the_trained_adapter_serves_through_the_cli(trained, monkeypatch) -> None:
    adapter, _ = trained
    record: dict[str, Any] = {
        "question": "Who was the first president of the American Psychological Association?",
        "docs": [
            {
                "title": "APA",
                "text": "The APA was founded in 1892. G. Stanley Hall was its first "
                "president. It publishes many journals.",
            },
            {"title": "Bread", "text": "Bread needs flour. Yeast makes dough rise."},
        ],
    }
    monkeypatch.setenv("RAGPRESS_COMPRESSION__METHOD", "exit")
    monkeypatch.setenv(
        "RAGPRESS_COMPRESSION__PARAMS", json.dumps({"model": str(adapter), "threshold": 0.0})
    )
    monkeypatch.setenv("RAGPRESS_COMPRESSION__TARGET_RATIO", "1")
    result = CliRunner().invoke(
        main, ["compress", "--json", "--cache", "none"], input=json.dumps(record)
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["stats"]["method"] == "exit"
    assert any("kept 5 of 5 sentences" in note for note in out["stats"]["notes"])
    assert [d["title"] for d in out["docs"]] == ["APA", "Bread"]
    assert [d["text"] for d in out["docs"]] == [d["text"] for d in record["docs"]]


def test_bad_training_input_is_a_usage_error(tmp_path, tiny_gemma_dir) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "docs": [{"title": "no text"}]}\n')
    result = CliRunner().invoke(
        main,
        ["train-exit", str(bad), "--base-model", str(tiny_gemma_dir), "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "docs[0] must be an object with a 'text' string" in result.output
