"""The chat-part policy: data URLs, allow-listed URLs through a fetcher, refusals, OCR route."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from ragpress.compressors.visual.api.parts import (
    BLANK_IMAGE_TEXT,
    ImagePartCompressor,
    compress_image_part,
    host_allowed,
)
from ragpress.exceptions import ConfigurationError, RequestValidationError


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def openai_part(url: str, detail: str | None = "auto") -> dict[str, Any]:
    inner = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": inner}


def test_openai_data_url_is_compressed_in_place(pages: dict[str, bytes]) -> None:
    result = compress_image_part(openai_part(data_url(pages["letter_page.png"])), model="gpt-4o")
    assert result.route == "image"
    assert (result.tokens_before, result.tokens_after) == (765, 425)
    (part,) = result.parts
    assert part["type"] == "image_url" and part["image_url"]["detail"] == "high"
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


def test_anthropic_base64_source_keeps_cache_control(pages: dict[str, bytes]) -> None:
    part = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(pages["slide.png"]).decode(),
        },
        "cache_control": {"type": "ephemeral"},
    }
    result = compress_image_part(part, model="claude-sonnet-4-5")
    (out,) = result.parts
    assert result.tokens_after is not None and result.tokens_before is not None
    assert result.route == "image" and result.tokens_after < result.tokens_before
    assert out["cache_control"] == {"type": "ephemeral"} and out["source"]["type"] == "base64"
    decoded = Image.open(io.BytesIO(base64.b64decode(out["source"]["data"])))
    assert result.image is not None
    assert decoded.size == (result.image.width, result.image.height)


def test_responses_input_image_shape(pages: dict[str, bytes]) -> None:
    part = {"type": "input_image", "image_url": data_url(pages["slide.png"]), "detail": "high"}
    (out,) = compress_image_part(part, model="gpt-4.1").parts
    assert out["type"] == "input_image" and out["image_url"].startswith("data:image/")


def test_allow_listed_url_is_fetched_through_the_injected_fetcher(pages: dict[str, bytes]) -> None:
    fetched: list[str] = []

    def fetcher(url: str) -> bytes:
        fetched.append(url)
        return pages["slide.png"]

    parts = ImagePartCompressor("gpt-4o", allow_hosts=["*.example.org"], fetcher=fetcher)
    result = parts.compress(openai_part("https://cdn.example.org/slide.png"))
    assert fetched == ["https://cdn.example.org/slide.png"]
    assert result.route == "image" and result.parts[0]["image_url"]["url"].startswith("data:")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.net/x.png",  # host not allowed
        "http://cdn.example.org/x.png",  # allowed host, but not https
        "https://user@cdn.example.org/x.png",  # credentials in the URL
        "https://example.org/x.png",  # "*.example.org" does not cover the bare domain
    ],
)
def test_other_urls_are_never_fetched(url: str) -> None:
    def fetcher(url: str) -> bytes:
        raise AssertionError(f"fetched {url}")

    parts = ImagePartCompressor("gpt-4o", allow_hosts=["*.example.org"], fetcher=fetcher)
    part = openai_part(url)
    result = parts.compress(part)
    assert result.route == "url_not_fetched" and result.parts == (part,)
    strict = ImagePartCompressor(
        "gpt-4o", allow_hosts=["*.example.org"], fetcher=fetcher, on_disallowed_url="reject"
    )
    with pytest.raises(RequestValidationError, match="not an allowed https image host") as info:
        strict.compress(part, param="messages[2].content[0]")
    assert info.value.param == "messages[2].content[0]"


def test_without_a_fetcher_allowed_urls_pass_through() -> None:
    part = {"type": "image", "source": {"type": "url", "url": "https://a.example.org/p.png"}}
    result = compress_image_part(part, model="claude-3-5-sonnet", allow_hosts=["a.example.org"])
    assert result.route == "url_not_fetched" and result.parts == (part,)


def test_host_allow_list_matching() -> None:
    assert host_allowed("CDN.Example.org.", ["cdn.example.org"])
    assert host_allowed("a.b.example.org", [".example.org"])
    assert not host_allowed("badexample.org", ["*.example.org"])
    assert not host_allowed("example.org.evil.com", ["example.org"])


@pytest.mark.parametrize(
    ("part", "param", "message"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
         "c.image_url.url", "not valid base64"),
        ({"type": "image_url", "image_url": {"url": "data:text/html;base64,AAAA"}},
         "c.image_url.url", "media type"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
         "c.image_url.url", "base64-encoded"),
        ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, "c", "scheme 'file'"),
        ({"type": "image_url", "image_url": {"url": data_url(b"xx"), "detail": "max"}},
         "c.image_url.detail", "'low', 'high' or 'auto'"),
        ({"type": "image_url", "image_url": {"url": data_url(b"not an image")}},
         "c", "could not be decoded"),
        ({"type": "image_url"}, "c.image_url", "must be"),
        ({"type": "image", "source": {"type": "file", "file_id": "f"}}, "c.source", "must be"),
        ({"type": "audio"}, "c.type", "image parts have type"),
    ],
)  # fmt: skip
def test_bad_parts_name_the_field(part: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(RequestValidationError, match=message) as info:
        compress_image_part(part, model="gpt-4o", param="c")
    assert info.value.param == param


def test_size_limit_and_configuration_errors(pages: dict[str, bytes]) -> None:
    with pytest.raises(RequestValidationError, match="byte limit"):
        ImagePartCompressor("gpt-4o", max_bytes=100).compress(
            openai_part(data_url(pages["slide.png"]))
        )
    with pytest.raises(ConfigurationError, match="list of host names"):
        ImagePartCompressor("gpt-4o", allow_hosts="example.org")


def test_blank_image_becomes_a_short_text_part() -> None:
    blank = png(Image.new("RGB", (1000, 1400), "white"))
    result = compress_image_part(openai_part(data_url(blank)), model="gpt-4o")
    assert result.route == "blank" and result.parts == ({"type": "text", "text": BLANK_IMAGE_TEXT},)
    assert result.tokens_after is not None and result.tokens_after < 10


def test_unchanged_part_is_returned_as_is() -> None:
    noise = png(Image.effect_noise((256, 256), 90).convert("RGB"))
    part = openai_part(data_url(noise), detail="low")
    result = compress_image_part(part, model="gpt-4o")
    assert result.route == "unchanged" and result.parts == (part,)


def test_ocr_route_sends_text_when_it_is_cheaper(pages: dict[str, bytes], ocr_engine) -> None:
    parts = ImagePartCompressor("claude-sonnet-4-5", ocr_engine=ocr_engine)
    result = parts.compress(openai_part(data_url(pages["slide.png"])))
    assert result.route == "ocr", result.reason
    assert result.text is not None and "Migration plan for the billing service" in result.text
    assert result.parts == ({"type": "text", "text": result.text},)
    assert result.tokens_after is not None and result.image is not None
    assert result.tokens_after < 0.8 * result.image.tokens_after


def test_ocr_route_refuses_pages_with_charts(pages: dict[str, bytes], ocr_engine) -> None:
    parts = ImagePartCompressor("gpt-4o", ocr_engine=ocr_engine)
    result = parts.compress(openai_part(data_url(pages["chart_page.png"])))
    assert result.route == "image"
    # No text lines are detected on the chart, so the OCR route is not even tried.
    assert result.ocr is None or not result.ocr.use_text
