"""A loopback stand-in for ``vllm serve --enable-prompt-embeds`` (shared by the vLLM tests)."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch


def _event(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish_reason}]}


class FakeVLLM:
    """``vllm serve --enable-prompt-embeds`` at the wire level: /v1/completions, JSON or SSE.

    ``prompt_embeds`` is decoded the way vLLM's server does it: base64, then
    ``torch.load(weights_only=True)``, then ``to_dense()``.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tensors: list[torch.Tensor] = []
        self.reply = "It was completed in 1889."
        self.reply_to_ids = self.reply
        self.status = 200
        self.error_body = b""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                assert self.path == "/v1/completions", self.path
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if server.status != 200:
                    self._send(server.status, server.error_body, "application/json")
                    return
                if "prompt_embeds" in body:
                    raw = base64.b64decode(body["prompt_embeds"], validate=True)
                    tensor = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
                    server.tensors.append(tensor.to_dense())
                    text = server.reply
                else:
                    text = server.reply_to_ids
                if body.get("stream"):
                    words = text.split(" ")
                    pieces = [w + " " for w in words[:-1]] + [words[-1]]
                    events = [_event(piece, None) for piece in pieces] + [_event("", "length")]
                    payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
                    self._send(200, (payload + "data: [DONE]\n\n").encode(), "text/event-stream")
                else:
                    reply = {
                        "object": "text_completion",
                        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                    }
                    self._send(200, json.dumps(reply).encode(), "application/json")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
