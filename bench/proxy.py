"""Added latency and throughput of the ragpress proxy, measured side by side in one run.

Everything runs on loopback: the fake LLM (tests/support/fake_llm.py, a real HTTP/1.1 server), the
proxy (`ragpress serve`, one process unless --workers), and a load generator (this process,
raw asyncio sockets, keep-alive). The same requests go to the upstream directly and through
the proxy, alternating in blocks so that noise from other processes hits both alike.

    .venv/bin/python bench/proxy.py                       # everything, ~3 minutes
    .venv/bin/python bench/proxy.py --stream-seconds 60   # the 200-stream soak at full length
    .venv/bin/python bench/proxy.py --servers uvicorn granian --skip-streams
    .venv/bin/python bench/proxy.py --skip-streams --litellm /opt/litellm/bin/litellm

With --litellm (the ``litellm`` command of a separate ``pip install 'litellm[proxy]'``
environment; it is not a ragpress dependency), LiteLLM's proxy, configured with the same
loopback upstream as an OpenAI-compatible model, gets the same unmarked requests in the same
run, as a reference point for what a pass-through LLM proxy costs.

Prints Markdown tables: latency (p50/p90/p99 at concurrency 1), throughput (closed loop,
--concurrency connections), and the stream soak (errors, bytes equal to direct, proxy RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

QUESTION = "When did the company move its headquarters to Lisbon?"
DOCS = [
    (
        f"Report {i}",
        " ".join(
            f"Sentence {j} of report {i} talks about quarterly revenue, hiring and the office "
            f"in city number {j}."
            for j in range(12)
        )
        + (" The company moved its headquarters to Lisbon in 2019." if i == 3 else ""),
    )
    for i in range(6)
]
CONTEXT = (
    "<context>"
    + "".join(f'<document title="{title}">{text}</document>' for title, text in DOCS)
    + "</context>"
)


def chat_body(*, marked: bool, stream: bool = False) -> bytes:
    content = f"{CONTEXT}\n{QUESTION}" if marked else QUESTION
    body: dict[str, Any] = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Answer from the context."},
            {"role": "user", "content": content},
        ],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\nauthorization: Bearer sk-bench\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection that reads whole responses (length or chunked)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request; a keep-alive connection the server closed while idle is reopened."""
        fresh = self.writer is None
        try:
            return await self._exchange(raw)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            self.close()
            if fresh:
                raise
            return await self._exchange(raw)

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                body += await self.reader.readexactly(size + 2)
                del body[-2:]
            return status, bytes(body)
        return status, await self.reader.readexactly(int(headers.get("content-length", "0")))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_upstream(chunk_delay: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            PYTHON,
            str(ROOT / "tests" / "support" / "fake_llm.py"),
            "--chunk-delay",
            str(chunk_delay),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, int(line.split()[1])


def wait_ready(port: int, path: str, what: str) -> None:
    deadline = time.time() + 300
    request = f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
    while time.time() < deadline:  # ready = models loaded, which takes a while under load
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(request)
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.5)
    raise SystemExit(f"{what} did not start")


def start_litellm(
    command: str, upstream_port: int, folder: Path
) -> tuple[subprocess.Popen[str], int]:
    """LiteLLM's proxy with the loopback upstream as an OpenAI-compatible model, no auth."""
    port = free_port()
    config = folder / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-test\n"
        "    litellm_params:\n"
        "      model: openai/gpt-test\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from the internet at start-up
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",  # ragpress runs keyless too
        "LITELLM_LOG": "ERROR",
    }
    proc = subprocess.Popen(
        [command, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    wait_ready(port, "/health/liveliness", "LiteLLM's proxy")
    return proc, port


def start_proxy(upstream_port: int, server: str, workers: int) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {
        **os.environ,
        "RAGPRESS_UPSTREAM__BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "RAGPRESS_CACHE__BACKEND": "memory",
    }
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "ragpress",
            "serve",
            "--port",
            str(port),
            "--server",
            server,
            "--workers",
            str(workers),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    wait_ready(port, "/ready", "the proxy")
    return proc, port


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (workers), in MiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


async def latency(
    targets: dict[str, tuple[int, bytes, int]], block: int = 25
) -> dict[str, list[float]]:
    """Sequential requests (concurrency 1), alternating between targets in blocks."""
    conns = {name: Connection(port) for name, (port, _, _) in targets.items()}
    raws = {name: request_bytes(port, body) for name, (port, body, _) in targets.items()}
    times: dict[str, list[float]] = {name: [] for name in targets}
    for name in targets:  # warm up: connections, caches, JIT-free but page faults
        for _ in range(20):
            await conns[name].exchange(raws[name])
    rounds = max(n for _, _, n in targets.values()) // block
    for round_ in range(rounds):
        for name, (_, _, n) in targets.items():
            if round_ * block >= n:
                continue
            conn, raw = conns[name], raws[name]
            for _ in range(block):
                started = time.perf_counter()
                status, _ = await conn.exchange(raw)
                times[name].append((time.perf_counter() - started) * 1e3)
                assert status == 200, status
    for conn in conns.values():
        conn.close()
    return times


async def throughput(port: int, body: bytes, concurrency: int, seconds: float) -> tuple[float, int]:
    raw = request_bytes(port, body)
    done = errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        conn = Connection(port)
        while time.perf_counter() < stop:
            try:
                status, _ = await conn.exchange(raw)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                conn.close()
                continue
            if status == 200:
                done += 1
            else:
                errors += 1
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started), errors


async def soak(
    proxy_port: int, upstream_port: int, streams: int, seconds: float, pid: int
) -> dict[str, float]:
    body = chat_body(marked=False, stream=True)
    direct = await Connection(upstream_port).exchange(request_bytes(upstream_port, body))
    reference = direct[1]
    raw = request_bytes(proxy_port, body)
    stats: dict[str, float] = {"streams": 0, "errors": 0, "mismatched": 0}
    memory: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        conn = Connection(proxy_port)
        while time.perf_counter() < stop:
            try:
                status, content = await conn.exchange(raw)
            except (OSError, asyncio.IncompleteReadError):
                stats["errors"] += 1
                conn.close()
                continue
            stats["streams"] += 1
            if status != 200:
                stats["errors"] += 1
            elif content != reference:
                stats["mismatched"] += 1
        conn.close()

    async def sample() -> None:
        while time.perf_counter() < stop:
            memory.append(rss_mb(pid))
            await asyncio.sleep(1)

    await asyncio.gather(sample(), *(client() for _ in range(streams)))
    third = max(1, len(memory) // 3)
    stats["rss_first_third_mb"] = round(statistics.mean(memory[:third]), 1)
    stats["rss_last_third_mb"] = round(statistics.mean(memory[-third:]), 1)
    stats["rss_max_mb"] = round(max(memory), 1)
    return stats


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(args: argparse.Namespace) -> None:
    upstream, upstream_port = start_upstream(0.0)
    streaming_upstream, streaming_port = start_upstream(args.chunk_delay)
    marked, unmarked = chat_body(marked=True), chat_body(marked=False)
    print(
        f"cores: {os.cpu_count()} (shared by load generator, upstream and proxy); "
        f"python {sys.version.split()[0]}\n"
    )
    litellm: tuple[subprocess.Popen[str], int] | None = None
    try:
        if args.litellm and not args.skip_requests:
            litellm = start_litellm(args.litellm, upstream_port, Path(tempfile.mkdtemp()))
        for server in [] if args.skip_requests else args.servers:
            proxy, port = start_proxy(upstream_port, server, args.workers)
            try:
                await run_server(
                    args, server, proxy, port, upstream_port, marked, unmarked,
                    litellm_port=litellm[1] if litellm else None,
                )  # fmt: skip
            finally:
                proxy.terminate()
                proxy.wait(30)
        if not args.skip_streams:
            proxy, port = start_proxy(streaming_port, args.servers[0], args.workers)
            try:
                result = await soak(
                    port, streaming_port, args.streams, args.stream_seconds, proxy.pid
                )
            finally:
                proxy.terminate()
                proxy.wait(30)
            print(
                f"\n### {args.streams} concurrent streams for {args.stream_seconds:g} s "
                f"({args.servers[0]}, {args.chunk_delay * 1e3:g} ms between events)\n"
            )
            print(
                "| streams completed | errors | bytes differ from direct | proxy RSS first third "
                "| last third | max |"
            )
            print("|---|---|---|---|---|---|")
            print(
                f"| {result['streams']} | {result['errors']} | {result['mismatched']} | "
                f"{result['rss_first_third_mb']} MiB | {result['rss_last_third_mb']} MiB | "
                f"{result['rss_max_mb']} MiB |"
            )
    finally:
        upstream.terminate()
        streaming_upstream.terminate()
        if litellm:
            litellm[0].terminate()


async def run_server(
    args: argparse.Namespace,
    server: str,
    proxy: subprocess.Popen[str],
    port: int,
    upstream_port: int,
    marked: bytes,
    unmarked: bytes,
    *,
    litellm_port: int | None = None,
) -> None:
    print(f"### {server}, {args.workers} worker(s)\n")
    targets = {
        "direct": (upstream_port, unmarked, args.requests),
        "proxy, nothing marked": (port, unmarked, args.requests),
        "proxy, compressing 6 docs (warm cache)": (port, marked, args.compressed_requests),
    }
    if litellm_port:
        targets["LiteLLM proxy (pass-through)"] = (litellm_port, unmarked, args.requests)
    times = await latency(targets)
    base = statistics.median(times["direct"])
    print("| path | p50 ms | p90 ms | p99 ms | added p50 ms |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        print(
            f"| {name} | {pct(values, 0.5):.2f} | {pct(values, 0.9):.2f} | {pct(values, 0.99):.2f} "
            f"| {statistics.median(values) - base:+.2f} |"
        )
    rss_before = rss_mb(proxy.pid)
    print(f"\n| closed loop, {args.concurrency} connections, {args.seconds:g} s | req/s | errors |")
    print("|---|---|---|")
    loads = {name: (target, body) for name, (target, body, _) in targets.items()}
    for name, (target, body) in loads.items():
        rate, errors = await throughput(target, body, args.concurrency, args.seconds)
        print(f"| {name} | {rate:,.0f} | {errors} |")
    print(f"\nproxy RSS: {rss_before:.0f} MiB before the load, {rss_mb(proxy.pid):.0f} MiB after\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=["uvicorn"], choices=["uvicorn", "granian"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000, help="per path, for latency")
    parser.add_argument("--compressed-requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput run")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--stream-seconds", type=float, default=20.0)
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between events")
    parser.add_argument("--skip-streams", action="store_true")
    parser.add_argument("--skip-requests", action="store_true", help="only the stream soak")
    parser.add_argument(
        "--litellm",
        metavar="COMMAND",
        help="path of a `litellm` command (pip install 'litellm[proxy]' in its own venv) to "
        "measure LiteLLM's proxy alongside",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
