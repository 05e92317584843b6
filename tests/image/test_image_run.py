"""Build the image with podman (no Docker engine) and run sci-fetch inside it against SeaweedFS.

Skipped, with the reason, where podman, debootstrap or root are missing, or when
SCI_FETCH_SKIP_IMAGE_TEST=1. How the image is made: see tests/image/imagetest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import imagetest
import pytest

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def built() -> imagetest.Built:
    if os.environ.get("SCI_FETCH_SKIP_IMAGE_TEST") == "1":
        pytest.skip("SCI_FETCH_SKIP_IMAGE_TEST=1")
    reason = imagetest.missing_requirements()
    if reason:
        pytest.skip(f"container image test: {reason}")
    return imagetest.build()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    return tmp_path


def test_image_config(built: imagetest.Built) -> None:
    imagetest.check_image_config(built)


def test_version(built: imagetest.Built) -> None:
    imagetest.check_version(built)


def test_download_with_environment_credentials(built: imagetest.Built, s3, work: Path) -> None:
    imagetest.check_env_credentials(built, s3, work)


def test_sharded_download_with_mounted_aws_profile(built: imagetest.Built, s3, work: Path) -> None:
    imagetest.check_profile_sharded(built, s3, work)


def test_sigterm_and_healthcheck(built: imagetest.Built, s3, work: Path) -> None:
    imagetest.check_stop_and_health(built, s3, work)
