"""Settings from the environment: list values in plain form, clear errors, limits with defaults."""

from __future__ import annotations

import pytest

from ragpress.config import RagpressSettings
from ragpress.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ("secret", ["secret"]),
        ("key-1, key-2", ["key-1", "key-2"]),
        ('["key-1","key-2"]', ["key-1", "key-2"]),
        ('["a,b"]', ["a,b"]),
    ],
)
def test_client_keys_may_be_a_json_list_or_comma_separated(monkeypatch, raw, keys):
    monkeypatch.setenv("RAGPRESS_PROXY__API_KEYS", raw)
    settings = RagpressSettings(_env_file=None)
    assert [k.get_secret_value() for k in settings.proxy.api_keys] == keys


def test_method_and_host_lists_take_the_plain_form_too(monkeypatch):
    monkeypatch.setenv("RAGPRESS_PROXY__METHODS", "llmlingua2,sentence_selection")
    monkeypatch.setenv("RAGPRESS_PROXY__IMAGES__ALLOW_HOSTS", "cdn.example.org")
    settings = RagpressSettings(_env_file=None)
    assert settings.proxy.methods == ["llmlingua2", "sentence_selection"]
    assert settings.proxy.images.allow_hosts == ["cdn.example.org"]


def test_a_broken_json_list_is_a_settings_error_that_names_the_variable(monkeypatch):
    monkeypatch.setenv("RAGPRESS_PROXY__API_KEYS", '["unterminated-secret",')
    with pytest.raises(ConfigurationError, match="RAGPRESS_PROXY__API_KEYS") as caught:
        RagpressSettings(_env_file=None)
    assert "unterminated-secret" not in str(caught.value)  # keys never reach messages


def test_an_object_setting_that_is_not_json_names_the_variable_and_the_form(monkeypatch):
    monkeypatch.setenv("RAGPRESS_COMPRESSION__PARAMS", "model=x")
    with pytest.raises(ConfigurationError, match="RAGPRESS_COMPRESSION__PARAMS") as caught:
        RagpressSettings(_env_file=None)
    assert "JSON" in str(caught.value)


def test_server_limits_have_bounded_defaults():
    proxy = RagpressSettings(_env_file=None).proxy
    assert 8 * 1024 <= proxy.max_header_bytes <= 1024 * 1024
    assert 0 < proxy.max_options_header_bytes <= proxy.max_header_bytes
    assert 0 < proxy.header_timeout_seconds <= 60
    assert 0 < proxy.keepalive_timeout_seconds <= 75
    assert proxy.max_concurrency is None or proxy.max_concurrency > 0
