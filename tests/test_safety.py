"""Safety: nothing is written outside the output dir (symbolic links included), secrets appear nowhere
sci_fetch writes or prints, and files get ordinary permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from helpers import animl_image, random_blobs, settings_for, write_coco
from test_reliability_support import (
    KB,
    failures,
    leftovers,
    rows,
    seed_parallel,
    start,
    tree,
)

from sci_fetch.cli import build_parser
from sci_fetch.commands import verify
from sci_fetch.commands.download import download
from sci_fetch.manifest.models import State


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    project = "safe" + uuid.uuid4().hex[:6]
    blobs = random_blobs(40, seed=61, sizes=[3 * KB, 12 * KB])
    images = [animl_image(project, b, camera=f"CAM{i % 4}") for i, b in enumerate(blobs)]
    seed_parallel(s3, images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Everything under ``folder``: file bytes, and link targets for symbolic links."""
    found: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            found[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            found[rel] = p.read_bytes()
    return found


def test_a_folder_inside_the_output_that_links_elsewhere_is_not_written_through(s3_env, dataset, tmp_path):
    coco, images, blobs = dataset
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    project = images[0]["file_name"].split("/")[0]
    elsewhere.mkdir()
    (out / project / "CAM1").mkdir(parents=True)
    os.symlink(elsewhere, out / project / "CAM1" / "dep1")  # images of CAM1 would land in ../elsewhere
    real = out / project / "CAM2-real"
    real.mkdir()
    os.symlink(real, out / project / "CAM2")  # a link that stays inside the output dir is fine
    settings = settings_for(s3_env, coco, out)
    assert download(settings) == 1
    assert snapshot(elsewhere) == {}
    by_id = {r["image_id"]: r for r in failures(settings)}
    cam1 = [r for r in images if "/CAM1/" in r["file_name"]]
    assert set(by_id) == {r["id"] for r in cam1}
    for row in by_id.values():
        assert (
            row["state"] == "failed"
            and "leads outside the output dir (symbolic link to " + str(elsewhere) in row["reason"]
        )
    for record, data in zip(images, blobs, strict=False):
        if "/CAM1/" not in record["file_name"]:
            assert (out / record["file_name"]).read_bytes() == data
    assert sorted(p.name for p in real.rglob("*.jpg")) == sorted(
        Path(r["file_name"]).name for r in images if "/CAM2/" in r["file_name"]
    )


def test_links_planted_at_a_file_name_or_its_partial_do_not_write_outside(s3_env, dataset, tmp_path):
    """A symbolic link where an image or its .partial goes is replaced, never written through."""
    coco, images, blobs = dataset
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    victims = {name: f"precious {name}\n".encode() for name in ("a.txt", "b.txt")}
    for name, data in victims.items():
        (elsewhere / name).write_bytes(data)
    target, partial = out / images[0]["file_name"], out / (images[1]["file_name"] + ".partial")
    target.parent.mkdir(parents=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere / "a.txt", target)
    os.symlink(elsewhere / "b.txt", partial)
    before = snapshot(elsewhere)
    assert download(settings_for(s3_env, coco, out)) == 0
    assert snapshot(elsewhere) == before == victims
    assert not target.is_symlink() and target.read_bytes() == blobs[0]
    assert (out / images[1]["file_name"]).read_bytes() == blobs[1] and not partial.exists()
    assert tree(out) == {r["file_name"]: b for r, b in zip(images, blobs, strict=False)}


def test_secrets_appear_in_no_output_log_manifest_or_failures_file(s3_env, dataset, tmp_path, capsys):
    """Three ways to fail on credentials, with debug logging, text and JSON: grep everything for the secrets.
    The proxy answers like S3, which puts the key id and the session token into its error bodies."""
    coco, _images, _blobs = dataset
    token = "FQoGZXIvYXdzSESSIONTOKEN" + uuid.uuid4().hex
    wrong_secret = "WRONGSECRET" + uuid.uuid4().hex
    secrets = [s3_env.access_key, s3_env.secret_key, token, wrong_secret]
    printed: list[str] = []
    outs = []
    with FaultProxy(s3_env.endpoint_url) as proxy:
        runs = [
            ({}, ("InvalidAccessKeyId", 15), ["--log-format", "text"]),  # the key dies mid-run
            ({"AWS_SESSION_TOKEN": token}, ("ExpiredToken", 0), ["--log-format", "json"]),  # an expired session
            ({"AWS_SECRET_ACCESS_KEY": wrong_secret}, None, ["--log-format", "text"]),  # a wrong secret
        ]
        for i, (env, refusal, extra) in enumerate(runs):
            out = tmp_path / f"out{i}"
            outs.append(out)
            if refusal:
                proxy.refuse_credentials(after=refusal[1], code=refusal[0])
            else:
                proxy.accept_credentials()
            proc = start(s3_env, coco, out, "--concurrency", "4", *extra, endpoint=proxy.url, env=env, verbose=True)
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 3, output
            printed.append(output)
    assert "InvalidAccessKeyId" in printed[0] and "ExpiredToken" in printed[1] and "SignatureDoesNotMatch" in printed[2]
    assert '"level": "error"' in printed[1]
    for out in outs:
        result = subprocess.run(
            [sys.executable, "-m", "sci_fetch", "status", str(out), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        printed.append(result.stdout + result.stderr)
        verify.run(build_parser().parse_args(["verify", "--output", str(out)]))
        printed.append(capsys.readouterr().out)
    everything = "\n".join(printed).encode()
    for out in outs:
        for p in out.rglob("*"):
            if p.is_file():
                everything += p.read_bytes()
    assert len(everything) > 100_000  # manifests, failures.csv, status.json, logs: there was something to search
    for secret in secrets:
        assert secret.encode() not in everything, "a secret leaked"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_and_folders_get_ordinary_permissions(s3_env, dataset, tmp_path, umask):
    coco, _images, _blobs = dataset
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        assert download(settings_for(s3_env, coco, out, limit=10)) == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in out.rglob("*")}
    assert len(modes) > 10 and leftovers(out) == []
    for rel, mode in modes.items():
        assert not mode & stat.S_IWOTH, f"{rel} is world-writable ({oct(mode)})"
        allowed = (0o777 if (out / rel).is_dir() else 0o666) & ~umask
        assert mode & ~allowed == 0, f"{rel}: {oct(mode)} is wider than the umask {oct(umask)} allows"
        if not rel.startswith(".sci-fetch"):  # images and their folders: exactly what the umask gives
            assert mode == allowed, f"{rel}: {oct(mode)}, expected {oct(allowed)} from umask {oct(umask)}"
    assert {".sci-fetch/manifest.sqlite", ".sci-fetch/failures.csv", ".sci-fetch/status.json"} <= set(modes)
    assert all(r.state is State.done for r in rows(out / ".sci-fetch" / "manifest.sqlite").values())
