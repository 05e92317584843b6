"""Shared fixtures: one real S3 server (SeaweedFS on loopback, its own free ports) per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sci_fetch.demo.seaweed import SeaweedS3

BUCKET = "test-bucket"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"), buckets=[BUCKET])
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No test may read the developer's AWS profile, SCI_FETCH_* variables or ./settings.toml."""
    for name in list(os.environ):
        if name.startswith(
            ("SCI_FETCH_", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION")
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def s3_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    """The server's credentials in the environment, as a user's would be."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    return s3
