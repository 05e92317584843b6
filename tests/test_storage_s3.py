"""storage.s3 decisions that need no server: when the lean GET path gives way to botocore's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sci_fetch.storage.s3 import uses_proxy


def client(url: str, proxies: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(meta=SimpleNamespace(endpoint_url=url, config=SimpleNamespace(proxies=proxies)))


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_without_a_proxy_the_lean_path_is_used():
    assert uses_proxy(client("https://s3.us-west-2.amazonaws.com")) is False


def test_a_proxy_for_the_endpoints_scheme_sends_gets_through_botocore(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert uses_proxy(client("https://s3.us-west-2.amazonaws.com")) is True
    assert uses_proxy(client("http://127.0.0.1:8333")) is False  # a proxy for https only


def test_no_proxy_keeps_the_lean_path(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert uses_proxy(client("http://127.0.0.1:8333")) is False
    assert uses_proxy(client("http://minio.internal:9000")) is True


def test_proxies_in_the_client_config_count_too():
    assert uses_proxy(client("https://s3.amazonaws.com", proxies={"https": "http://p:1"})) is True
