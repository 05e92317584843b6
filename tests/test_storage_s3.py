"""storage.s3 decisions that need no server: when the lean GET path gives way to botocore's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sci_fetch.storage.s3 import uses_proxy


def client(url: str, proxies: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(meta=SimpleNamespace(endpoint_url=url, config=SimpleNamespace(proxies=proxies)))


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
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


@pytest.mark.parametrize(
    "region, bucket, endpoint, expected",
    [
        # regions opened since 2019 refuse the legacy global host a presigned URL would use
        ("af-south-1", "mybucket", None, "https://mybucket.s3.af-south-1.amazonaws.com/"),
        (
            "us-west-2",
            "animl-images-serving-prod",
            None,
            "https://animl-images-serving-prod.s3.us-west-2.amazonaws.com/",
        ),
        ("us-east-1", "mybucket", None, "https://mybucket.s3.amazonaws.com/"),
        ("eu-west-1", "my.bucket", None, "https://s3.eu-west-1.amazonaws.com/my.bucket/"),  # dots: path style over TLS
        ("us-east-1", "b", "http://127.0.0.1:8333", "http://127.0.0.1:8333/b/"),
    ],
)
def test_the_lean_get_goes_where_botocores_own_get_goes_and_sends_nothing_to_find_out(
    region, bucket, endpoint, expected
):
    import asyncio

    import aioboto3

    from sci_fetch.storage.direct import bucket_url

    async def main():
        session = aioboto3.Session(aws_access_key_id="AK", aws_secret_access_key="SK")
        async with session.client("s3", region_name=region, endpoint_url=endpoint) as s3:
            sent = []
            s3.meta.events.register("before-send.s3", lambda **kw: sent.append(kw["request"].url))
            url = await bucket_url(s3, bucket)
            return url, sent

    url, sent = asyncio.run(main())
    assert url == expected and sent == []


def test_a_no_proxy_entry_with_a_port_is_matched_as_botocore_matches_it(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "minio:9000")
    assert uses_proxy(client("http://minio:9000")) is False
