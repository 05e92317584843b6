"""tests/image: the container image (Dockerfile, .dockerignore, deploy/ examples, the health script)."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "image: builds the container image with podman and runs it (slow; needs root, podman, debootstrap)"
    )
