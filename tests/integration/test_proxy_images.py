"""Image and PDF parts through the running proxy, with the official openai and anthropic SDKs.

The LLM is the recording loopback server (tests/support/fake_llm.py); allow-listed image URLs are
served by a second loopback server speaking HTTPS with a test CA (trustme) that the proxy is told to
trust, as an operator would configure a private CA.
"""

from __future__ import annotations

import base64
import io
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

pytest.importorskip("PIL")
trustme = pytest.importorskip("trustme")

from PIL import Image  # noqa: E402

from ragpress.compressors.visual.api.costs import cost_model_for  # noqa: E402
from ragpress.middleware.proxy.fetch import ImageFetcher  # noqa: E402
from ragpress.middleware.serving.images import ImageFetchError  # noqa: E402
from tests.support.fake_llm import FakeLLM  # noqa: E402
from tests.support.proxy import error_body, running_proxy  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "visual"
CHART = (FIXTURES / "chart_page.png").read_bytes()
SLIDE = (FIXTURES / "slide.png").read_bytes()
PDF = (FIXTURES / "report.pdf").read_bytes()
GROUND_TRUTH = json.loads((FIXTURES / "ground_truth.json").read_text())


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def openai_image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def anthropic_image(data: bytes, **extra) -> dict[str, Any]:
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(data).decode()}
    return {"type": "image", "source": source, **extra}


def decoded(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()  # a valid, complete image
    return image


class ImageServer:
    """An HTTPS server on 127.0.0.1 with a trustme certificate for localhost and 127.0.0.1."""

    def __init__(self, ca) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.paths.append(self.path)
                if self.path == "/chart.png":
                    self._send(200, CHART, {"content-type": "image/png"})
                elif self.path.startswith("/redirect-to/"):
                    target = self.path[len("/redirect-to/") :].replace("PORT", str(server.port))
                    self._send(302, b"", {"location": target})
                elif self.path == "/big.png":
                    self._send(200, CHART + b"\0" * 5000, {"content-type": "image/png"})
                else:
                    self._send(404, b"not found", {})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def images(ca):
    server = ImageServer(ca)
    yield server
    server.close()


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as server:
        yield server


def image_settings(ca_file, **extra) -> dict[str, Any]:
    return {
        "images": {"enabled": True, "allow_hosts": ["localhost"], "ca_file": str(ca_file), **extra}
    }


@pytest.fixture(scope="module")
def proxy_url(llm, ca_file):
    with running_proxy(llm, proxy=image_settings(ca_file)) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh(llm, images):
    llm.requests.clear()
    images.paths.clear()


@pytest.fixture
def client(proxy_url):
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-client", max_retries=0) as c:
        yield c


def ask(client, *parts, model: str = "gpt-4o", **kwargs):
    content = [{"type": "text", "text": "What does this show?"}, *parts]
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kwargs
    )


def test_a_data_url_image_is_sent_cheaper_and_still_a_valid_image(client, llm):
    original = data_url(CHART)
    raw = ask(client, openai_image(original))
    assert raw.parse().choices[0].message.content.startswith("I read")
    sent = llm.last().json()["messages"][0]["content"]
    assert sent[0] == {"type": "text", "text": "What does this show?"}
    image = sent[1]["image_url"]
    assert image["url"] != original and image["detail"] in ("low", "high")
    cost = cost_model_for("gpt-4o")
    before = cost.tokens(*Image.open(io.BytesIO(CHART)).size)
    after = cost.tokens(*decoded(image["url"]).size, image["detail"])
    assert after < before  # re-costed with the provider's formula
    headers = raw.headers
    assert headers["x-ragpress-compression"] == "compressed"
    assert headers["x-ragpress-images"] == "1"
    assert headers["x-ragpress-image-routes"] == "image=1"
    assert int(headers["x-ragpress-image-tokens-before"]) == before
    assert int(headers["x-ragpress-image-tokens-after"]) == after
    assert int(headers["x-ragpress-tokens-after"]) < int(headers["x-ragpress-tokens-before"])


def test_an_allow_listed_url_is_fetched_and_inlined(client, llm, images):
    raw = ask(client, openai_image(images.url("/chart.png")))
    assert images.paths == ["/chart.png"]
    url = llm.last().json()["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/") and decoded(url).size < Image.open(io.BytesIO(CHART)).size
    assert raw.headers["x-ragpress-image-routes"] == "image=1"


def test_a_url_off_the_allow_list_is_passed_on_untouched_and_never_fetched(client, llm, images):
    part = openai_image(images.url("/chart.png", host="127.0.0.1"))
    raw = ask(client, part)
    assert images.paths == []  # not fetched: the provider gets the URL as it was
    assert llm.last().json()["messages"][0]["content"][1] == part
    assert raw.headers["x-ragpress-image-routes"] == "url_not_fetched=1"
    assert raw.headers["x-ragpress-compression"] == "unmarked"  # the client's bytes went on
    assert "not in allow_hosts" in raw.headers["x-ragpress-notes"]


def test_a_redirect_off_the_allow_list_is_not_followed(client, llm, images):
    target = "https://127.0.0.1:PORT/chart.png"
    part = openai_image(images.url(f"/redirect-to/{target}"))
    raw = ask(client, part)
    assert images.paths == [f"/redirect-to/{target}"]  # the second hop was never requested
    assert llm.last().json()["messages"][0]["content"][1] == part
    assert raw.headers["x-ragpress-image-routes"] == "fetch_failed=1"
    assert "not in allow_hosts" in raw.headers["x-ragpress-notes"]


def test_unknown_models_leave_images_alone_and_say_what_to_set(client, llm):
    part = openai_image(data_url(CHART))
    raw = ask(client, part, model="my-local-vlm")
    assert llm.last().json()["messages"][0]["content"][1] == part
    assert "RAGPRESS_PROXY__IMAGES__DEFAULT_MODEL" in raw.headers["x-ragpress-notes"]
    assert raw.headers["x-ragpress-image-routes"] == "unknown_model=1"


def test_a_request_can_opt_out_and_bad_images_are_a_400_naming_the_part(client, llm):
    part = openai_image(data_url(CHART))
    raw = ask(client, part, extra_body={"ragpress": {"images": False}})
    assert llm.last().json()["messages"][0]["content"][1] == part
    assert raw.headers["x-ragpress-compression"] == "unmarked"
    llm.requests.clear()
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, openai_image("data:image/png;base64,not base64!"))
    assert error_body(caught.value)["param"] == "messages[0].content[1].image_url.url"
    assert llm.requests == []


def test_a_compression_timeout_fails_open_and_forwards_the_image_as_sent(llm, ca_file):
    settings = image_settings(ca_file, ocr=False)
    part = openai_image(data_url(CHART))
    with (
        running_proxy(llm, proxy={**settings, "compression_timeout_seconds": 1e-6}) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
    ):
        raw = ask(client, part)
    assert raw.headers["x-ragpress-compression"] == "failed-open"
    assert "TimeoutError" in raw.headers["x-ragpress-error"]
    assert llm.last().json()["messages"][0]["content"][1] == part


def test_reject_mode_answers_an_openai_400_for_urls_off_the_allow_list(llm, ca_file, images):
    settings = image_settings(ca_file, on_disallowed_url="reject", ocr=False)
    with (
        running_proxy(llm, proxy=settings) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        ask(client, openai_image("https://elsewhere.example/cat.png"))
    assert error_body(caught.value)["param"] == "messages[0].content[1]"
    assert error_body(caught.value)["type"] == "invalid_request_error"
    assert "elsewhere.example" in error_body(caught.value)["message"]
    assert llm.requests == [] and images.paths == []


def test_a_scanned_page_takes_the_ocr_route_and_its_text_is_compressed(proxy_url, llm):
    question = "Which regions switch traffic first in the billing migration?"
    content: list[Any] = [anthropic_image(SLIDE), {"type": "text", "text": question}]  # wire dicts
    with anthropic.Anthropic(base_url=proxy_url, api_key="k", max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-test",
            max_tokens=32,
            messages=[{"role": "user", "content": content}],
            extra_body={"ragpress": {"target_ratio": 2}},
        )
        client.messages.create(  # the same image again: served from the cache, same bytes
            model="claude-test",
            max_tokens=32,
            messages=[{"role": "user", "content": content}],
            extra_body={"ragpress": {"target_ratio": 2}},
        )
    first, again = llm.requests
    assert first.body == again.body
    (text_part, asked) = first.json()["messages"][0]["content"]
    assert asked == {"type": "text", "text": question}
    assert text_part["type"] == "text"  # the image became its (compressed) text
    truth = GROUND_TRUTH["slide.png"]
    kept = [line.strip() for line in text_part["text"].splitlines() if line.strip()]
    assert kept and len(text_part["text"]) < len(truth)
    assert all(any(line in t for t in truth.splitlines()) for line in kept), kept
    headers = raw.headers
    assert headers["x-ragpress-image-routes"] == "ocr=1"
    assert int(headers["x-ragpress-image-tokens-after"]) < int(
        headers["x-ragpress-image-tokens-before"]
    )
    metrics = httpx.get(f"{proxy_url}/metrics").text
    assert 'ragpress_images_total{route="ocr"}' in metrics


def test_an_image_in_the_protected_prefix_reaches_the_upstream_byte_for_byte(proxy_url, llm):
    cached = anthropic_image(CHART)
    first = [cached, {"type": "text", "text": "Keep this.", "cache_control": {"type": "ephemeral"}}]
    messages: list[Any] = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": [anthropic_image(CHART), {"type": "text", "text": "And?"}]},
    ]
    with anthropic.Anthropic(base_url=proxy_url, api_key="k", max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-test", max_tokens=32, messages=messages
        )
    sent = llm.last()
    body = sent.json()["messages"]
    assert body[0] == messages[0] and body[1] == messages[1]
    assert json.dumps(cached["source"]["data"]).encode() in sent.body  # the same base64 bytes
    assert body[2]["content"][0]["source"]["data"] != cached["source"]["data"]
    assert raw.headers["x-ragpress-images"] == "1"


def test_a_pdf_part_becomes_its_text_pages(client, llm):
    part = {
        "type": "file",
        "file": {"filename": "report.pdf", "file_data": data_url(PDF, "application/pdf")},
    }
    raw = ask(client, part, extra_body={"ragpress": {"target_ratio": 1}})
    sent = llm.last().json()["messages"][0]["content"]
    assert sent[1] == {"type": "text", "text": "report.pdf"}  # the file name is kept
    pages = [p["text"] for p in sent[2:]]
    assert [p["type"] for p in sent[2:]] == ["text", "text"]
    assert "Quarterly operations report" in pages[0] and "annual customer survey" in pages[1]
    assert raw.headers["x-ragpress-image-routes"] == "pdf=1"


def test_the_fetcher_limits_size_and_refuses_plain_http(ca_file, images):
    fetcher = ImageFetcher(["localhost"], max_bytes=len(CHART) + 100, ca_file=ca_file)
    assert fetcher(images.url("/chart.png")) == CHART
    with pytest.raises(ImageFetchError, match="byte limit"):
        fetcher(images.url("/big.png"))
    with pytest.raises(ImageFetchError, match="only https"):
        fetcher(f"http://localhost:{images.port}/chart.png")
    with pytest.raises(ImageFetchError, match="answered 404"):
        fetcher(images.url("/missing.png"))
    fetcher.close()
    untrusting = ImageFetcher(["localhost"], max_bytes=1 << 20)  # certifi does not know the CA
    with pytest.raises(ImageFetchError, match=r"SSL|certificate|Connect"):
        untrusting(images.url("/chart.png"))
    untrusting.close()
