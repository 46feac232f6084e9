"""LLMLingua-2 from the command line: batch with --model, start-up errors, and distillation."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("openai")

from tests.support.cli import main

pytestmark = pytest.mark.model

STOPWORDS = {"the", "a", "an", "of", "to", "in", "and", "is", "was", "for", "on", "at", "it"}
TEXTS = [
    "The committee met on Monday to discuss the budget for the new library. It was agreed "
    "that the city will fund the building of a library in the north of the town.",
    "A storm hit the coast at night. The wind was strong and the sea rose in the harbour; "
    "boats broke loose and the power went out in the old town for a day.",
    "The team shipped the release on time. It fixes a bug in the parser and adds support "
    "for tables in the export. Users asked for it in the survey.",
    "Prices rose by 3% in March. The bank said it is ready to act, and markets fell on the "
    "news. Analysts expect a rate rise in the spring.",
]
RECORDS: list[dict[str, Any]] = [
    {"id": f"r{i}", "question": "What happened?", "docs": [{"title": f"T{i}", "text": t}]}
    for i, t in enumerate(TEXTS)
]


class StubTeacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that compresses by deleting stopwords."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        prompt = body["messages"][0]["content"]
        text = re.search(
            r"compress the following text: (.*)\nThe compressed text is:", prompt, re.S
        )
        words = text.group(1).split() if text else []
        kept = " ".join(w for w in words if w.lower().strip(".,;") not in STOPWORDS)
        payload = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": kept},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def teacher_url():
    StubTeacher.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubTeacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("int8", [False, True], ids=["torch", "onnx-int8"])
def test_batch_runs_llmlingua2_with_a_local_model(tmp_path, bert_token_classifier, int8) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", RECORDS)
    target = tmp_path / "out.jsonl"
    args = ["batch", str(source), str(target), "--method", "llmlingua2"]
    if int8:
        pytest.importorskip("onnxruntime")
        onnx_path = f"onnx_path={tmp_path / 'm.int8.onnx'}"
        args += ["--param", "backend=onnx", "--param", "quantize=int8", "--param", onnx_path]
    done = CliRunner().invoke(main, [*args, "--model", bert_token_classifier, "--rate", "0.4"])
    assert done.exit_code == 0, done.output
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in out] == ["r0", "r1", "r2", "r3"]
    for record, original in zip(out, RECORDS, strict=True):
        assert record["error"] is None and record["stats"]["method"] == "llmlingua2"
        doc = record["docs"][0]
        text = original["docs"][0]["text"]
        assert doc["text"] == " ".join(text[s:e] for s, e in doc["spans"])
        assert 0.3 <= record["stats"]["tokens_after"] / record["stats"]["tokens_before"] <= 0.5


def test_missing_model_fails_at_start_up_with_a_fix(tmp_path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    missing = str(tmp_path / "models" / "llmlingua-2-xlm-roberta-large-meetingbank")
    done = CliRunner().invoke(
        main,
        ["batch", str(source), str(tmp_path / "o.jsonl"), "-m", "llmlingua2", "--model", missing],
    )
    assert done.exit_code == 2
    assert "could not be loaded" in done.output and "local folder" in done.output
    assert not (tmp_path / "o.jsonl").exists() or not (tmp_path / "o.jsonl").read_text()


def test_int8_without_the_onnx_backend_fails_at_start_up_with_a_fix(
    tmp_path, bert_token_classifier
) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    args = ["batch", str(source), str(tmp_path / "o.jsonl"), "-m", "llmlingua2"]
    done = CliRunner().invoke(
        main, [*args, "--model", bert_token_classifier, "--param", "quantize=int8"]
    )
    assert done.exit_code == 2
    assert "backend='onnx'" in done.output


def test_distill_end_to_end_with_a_stub_teacher(tmp_path, teacher_url, bert_token_classifier):
    """Base model: the MiniLM backbone (first 2 layers, to keep the test short)."""
    from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor
    from ragpress.types import CompressionOptions, Passage

    source = _write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "distilled"
    args = [
        "distill",
        str(source),
        str(out),
        "--teacher-url",
        teacher_url,
        "--teacher-model",
        "stub-teacher",
        "--base-model",
        bert_token_classifier,
        "--epochs",
        "6",
        "--lr",
        "1e-3",
        "--batch-size",
        "2",
        "--filter",
        "0",
        "--quiet",
    ]
    done = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": "sk-test"})
    assert done.exit_code == 0, done.output
    assert len(StubTeacher.requests) == 4
    request = StubTeacher.requests[0]
    assert request["temperature"] == 0.3 and request["model"] == "stub-teacher"
    assert "You can ONLY remove unimportant words." in request["messages"][0]["content"]
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 4 and all(p["variation_rate"] == 0 for p in pairs)
    state = json.loads((out / "model" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 6 * 2

    # A rerun resumes: no teacher calls for labelled chunks, no training steps left.
    again = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": "sk-test"})
    assert again.exit_code == 0, again.output
    assert len(StubTeacher.requests) == 4

    # The result loads in the compressor and has learnt the teacher's habit.
    compressor = LLMLingua2Compressor(str(out / "model"))
    passage = Passage("The mayor of the town opened a bridge over the river in the spring.")
    (analysis,) = compressor.analyze([passage])
    words = [passage.text[s:e].lower() for s, e in analysis.spans.tolist()]
    stop = [p for w, p in zip(words, analysis.probs, strict=True) if w in STOPWORDS]
    content = [
        p for w, p in zip(words, analysis.probs, strict=True) if w.isalpha() and w not in STOPWORDS
    ]
    assert sum(stop) / len(stop) < sum(content) / len(content)
    result = compressor.compress(None, [passage], CompressionOptions(rate=0.5))
    assert "mayor" in result.passages[0].text
