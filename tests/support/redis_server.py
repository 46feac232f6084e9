"""A throwaway ``redis-server`` for tests that must put a real server into a bad state.

Tests that refuse writes (maxmemory with noeviction, a read-only replica, min-replicas-to-write,
a failed snapshot) cannot do that to the shared test Redis, so each starts its own, on a free
port, with persistence off unless asked, and stops it afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["OOM_ARGS", "RedisServer", "redis_server_binary"]

OOM_ARGS = ("--maxmemory", "1", "--maxmemory-policy", "noeviction")
"""Options of a Redis that refuses every write with OOM (1 byte of memory, no eviction)."""


def redis_server_binary() -> str | None:
    """The ``redis-server`` executable on PATH, if any."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` subprocess on 127.0.0.1 (use as a context manager).

    Args:
        folder: Its working folder (``dir``: where a snapshot would go).
        *args: More ``redis-server`` command-line options, e.g. ``"--maxmemory", "1mb"``.
    """

    def __init__(self, folder: Path, *args: str) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.port = _free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        folder.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
        if "--save" not in args:
            command += ["--save", ""]
        self._process = subprocess.Popen(
            [*command, "--appendonly", "no", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server {' '.join(args)} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (idempotent); killed, as nothing of it needs saving."""
        if self._process.poll() is None:
            self._process.kill()  # SIGTERM would try a final snapshot, which MISCONF refuses
            self._process.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
