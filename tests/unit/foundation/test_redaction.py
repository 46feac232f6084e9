"""Secrets never reach output: passwords in URLs and secret query parameters are masked."""

from __future__ import annotations

import pytest

from ragpress.redaction import MASK, hide_urls, mask_url, mask_urls


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        ("rediss://default:hunter2@cache:6380", f"rediss://default:{MASK}@cache:6380"),
        ("https://user:pa%3Ass@api.example.com/v1", f"https://user:{MASK}@api.example.com/v1"),
        ("https://token@api.example.com/v1", f"https://{MASK}@api.example.com/v1"),
        (
            "https://api.example.com/v1?api_key=sk-1&model=x&SIG=abc",
            f"https://api.example.com/v1?api_key={MASK}&model=x&SIG={MASK}",
        ),
        (
            "https://api.example.com/v1?key=a%20b#frag",
            f"https://api.example.com/v1?key={MASK}#frag",
        ),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("unix:///run/redis.sock?db=0&password=pw", f"unix:///run/redis.sock?db=0&password={MASK}"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_mask_url_hides_passwords_and_secret_parameters(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_never_raises_on_odd_input() -> None:
    for odd in ("http://[::1", "redis://:@h", "://x", "http://a:b@", "http://x:y@[::1"):
        assert isinstance(mask_url(odd), str)
    assert "secret" not in mask_url("http://u:secret@[::1")


def test_mask_urls_finds_urls_inside_text() -> None:
    text = "cannot reach redis://:hunter2@10.0.0.5:6379/0 (and https://u:p@x.org/v1?token=t)."
    masked = mask_urls(text)
    assert "hunter2" not in masked and ":p@" not in masked and "token=t" not in masked
    assert masked.startswith("cannot reach redis://:") and masked.endswith("token=****).")


def test_hide_urls_leaves_no_address_behind() -> None:
    text = "vLLM at http://10.0.0.3:8000/v1 timed out; retry https://u:p@x.org/v1."
    hidden = hide_urls(text)
    assert "10.0.0.3" not in hidden and "x.org" not in hidden
    assert hidden.startswith("vLLM at (address not shown) timed out")
