"""Build the sci-fetch container image without a Docker engine and run it against SeaweedFS on loopback.

How, on a machine with no Docker engine and no registry of images:

1. base image: ``debootstrap --variant=minbase`` of Debian bookworm with python3, python3-venv and
   ca-certificates, from the Debian mirror this machine's apt uses, imported with ``podman import``
   (kept in podman's storage as ``localhost/sci-fetch-test-base:bookworm``; made once).
   ``SCI_FETCH_IMAGE_BASE=python:3.12-slim`` uses an image already in podman's storage instead.
2. wheelhouse: ``pip download`` on the host of every dependency (for the base image's Python), plus
   setuptools and wheel to build sci-fetch; mounted into the build at /wheels and used with
   ``PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels``, so the build needs no network of its own.
3. ``podman build --isolation chroot --format docker`` of the top-level Dockerfile (docker format keeps
   HEALTHCHECK; chroot isolation needs no OCI runtime).
4. ``podman run --network host`` of that image against a SeaweedFS server started on the host's
   loopback: --version, a download with environment credentials, a sharded download with a mounted
   ~/.aws folder, and a run stopped with SIGTERM (exit 143) whose HEALTHCHECK is read while it runs,
   while it is stalled (SIGSTOP) and after it finished.

Run it alone (as root; podman and debootstrap installed):

    python tests/image/imagetest.py            # build and run every check
    python tests/image/imagetest.py --rebuild-base

The pytest file beside it (test_image_run.py) runs the same checks with the suite's SeaweedFS server.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
BASE_TAG = "localhost/sci-fetch-test-base:bookworm"
IMAGE_TAG = "localhost/sci-fetch:image-test"
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
IMAGE_UID = 10001  # the Dockerfile's user
BUCKET = "image-test-bucket"


def log(message: str) -> None:
    print(f"[image-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    path = Path(os.environ.get("SCI_FETCH_IMAGE_CACHE") or Path.home() / ".cache" / "sci-fetch-image-test")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sh(
    cmd: Sequence[str], *, check: bool = True, capture: bool = True, timeout: float = 900, input: bytes | None = None
) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its output, which is what a test report should show."""
    proc = subprocess.run(list(cmd), input=input, capture_output=capture, timeout=timeout)
    if check and proc.returncode != 0:
        out = (proc.stdout or b"").decode(errors="replace")[-4000:]
        err = (proc.stderr or b"").decode(errors="replace")[-4000:]
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}")
    return proc


def text(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or b"").decode(errors="replace") + (proc.stderr or b"").decode(errors="replace")


# ---- what this machine has -----------------------------------------------------------------------


def missing_requirements() -> str | None:
    """Why the image test cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install -y podman debootstrap runc)"
    if os.geteuid() != 0:
        return "needs root (rootful podman, and debootstrap's chroot)"
    if (
        not os.environ.get("SCI_FETCH_IMAGE_BASE")
        and not image_exists(BASE_TAG)
        and shutil.which("debootstrap") is None
    ):
        return "debootstrap is not installed (apt-get install -y debootstrap) and no base image is cached"
    return None


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], capture_output=True).returncode == 0


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line format); SCI_FETCH_IMAGE_MIRROR wins."""
    if os.environ.get("SCI_FETCH_IMAGE_MIRROR"):
        return os.environ["SCI_FETCH_IMAGE_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            m = re.match(r"^URIs:\s*(\S+)", line) or re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and "security" not in m.group(1) and m.group(1).rstrip("/").endswith("debian"):
                return m.group(1)
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*; set SCI_FETCH_IMAGE_MIRROR")


# ---- podman run, with what this host needs --------------------------------------------------------


@dataclass
class Podman:
    """`podman run` with the options this host needs, found once by trying.

    Inside another container (as on these CI machines) the default OCI runtime may be unable to raise
    rlimits (no CAP_SYS_RESOURCE) or to use hybrid cgroups: then explicit --ulimit values at or below
    the current ones, and runc instead of crun, make `podman run` work.
    """

    extra: list[str] = field(default_factory=list)

    @classmethod
    def probe(cls, image: str) -> Podman:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limits = ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096"]
        candidates = [[], limits]
        if shutil.which("runc"):
            candidates.append(["--runtime", "runc", *limits])
        errors = []
        for extra in candidates:
            proc = sh(["podman", "run", "--rm", *extra, "--entrypoint", "python3", image, "--version"], check=False)
            if proc.returncode == 0:
                if extra:
                    log(f"podman run needs {' '.join(extra)} here")
                return cls(extra)
            errors.append(f"{extra or 'defaults'}: {text(proc).strip()[-300:]}")
        raise RuntimeError("podman run does not work on this machine:\n" + "\n".join(errors))

    def cmd(self, *args: str, detach: bool = False) -> list[str]:
        base = ["podman", "run", "--network", "host", "--log-driver", "k8s-file", *self.extra]
        return base + (["-d"] if detach else ["--rm"]) + list(args)

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return sh(self.cmd(*args), check=check, timeout=timeout)


# ---- base image, wheelhouse, build -------------------------------------------------------------------


def ensure_base(rebuild: bool = False) -> str:
    """The base image's name: SCI_FETCH_IMAGE_BASE, else a debootstrapped Debian made once."""
    if os.environ.get("SCI_FETCH_IMAGE_BASE"):
        return os.environ["SCI_FETCH_IMAGE_BASE"]
    if image_exists(BASE_TAG) and not rebuild:
        return BASE_TAG
    mirror = apt_mirror()
    debs = cache_dir() / "debootstrap-debs"
    debs.mkdir(exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sci-fetch-rootfs-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} ({BASE_PACKAGES}) from {mirror}")
        sh(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                f"--cache-dir={debs}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            timeout=1800,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                ["podman", "import", "-", BASE_TAG], stdin=tar.stdout, capture_output=True, timeout=900
            )
            if imported.returncode != 0:
                raise RuntimeError(f"podman import failed: {text(imported)[-2000:]}")
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait()
    log(f"base image {BASE_TAG} made in {time.monotonic() - started:.0f}s")
    return BASE_TAG


def dependencies() -> list[str]:
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    return list(project["project"]["dependencies"]) + list(project["build-system"]["requires"])


def wheelhouse(python_version: str) -> Path:
    """Wheels of every dependency for the image's Python (CPython, this machine's platform)."""
    target = cache_dir() / f"wheels-py{python_version}"
    target.mkdir(exist_ok=True)
    log(f"wheelhouse for Python {python_version} in {target}")
    sh(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            "--dest",
            str(target),
            *dependencies(),
        ],
        timeout=1800,
    )
    return target


def python_version(podman: Podman, image: str) -> str:
    proc = podman.run(
        "--entrypoint", "python3", image, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
    )
    return proc.stdout.decode().strip()


def image_id(tag: str) -> str | None:
    proc = sh(["podman", "image", "inspect", "--format", "{{.Id}}", tag], check=False)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def build_image(base: str, wheels: Path, tag: str = IMAGE_TAG) -> None:
    started = time.monotonic()
    previous = image_id(tag)
    sh(
        [
            "podman",
            "build",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--pull=never" if base.startswith("localhost/") else "--pull=missing",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            "PIP_NO_INDEX=1",
            "--build-arg",
            "PIP_FIND_LINKS=/wheels",
            "--volume",
            f"{wheels}:/wheels:ro",
            "--tag",
            tag,
            "--file",
            str(REPO / "Dockerfile"),
            str(REPO),
        ],
        timeout=1800,
    )
    log(f"image {tag} built in {time.monotonic() - started:.0f}s")
    if previous and previous != image_id(tag):  # the last build's image, now untagged; its layers stay cached
        sh(["podman", "rmi", previous], check=False)


@dataclass
class Built:
    podman: Podman
    tag: str
    base: str


def build(rebuild_base: bool = False) -> Built:
    base = ensure_base(rebuild_base)
    podman = Podman.probe(base)
    wheels = wheelhouse(python_version(podman, base))
    build_image(base, wheels)
    return Built(podman, IMAGE_TAG, base)


# ---- test data on the host ------------------------------------------------------------------------


def make_data_dir(parent: Path, uid: int = IMAGE_UID) -> Path:
    """A host folder for /data that the container's user (the image's uid 10001 by default) can write."""
    data = parent / "data"
    data.mkdir(parents=True)
    parent.chmod(0o755)
    os.chown(data, uid, uid)
    return data


def seed_objects(s3, n: int, seed: int, bucket: str = BUCKET) -> tuple[list[dict], list[bytes]]:
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from helpers import animl_image, random_blobs  # noqa: PLC0415 - tests/ is not a package

    s3.ensure_bucket(bucket)
    blobs = random_blobs(n, seed=seed, sizes=[2_000, 40_000, 300_000])
    images = [animl_image(f"proj{seed}", data, camera=f"CAM{i % 3}") for i, data in enumerate(blobs)]
    client = s3.client()
    for record, data in zip(images, blobs, strict=True):
        client.put_object(Bucket=bucket, Key=record["serving_bucket_key"], Body=data)
    return images, blobs


def write_coco(path: Path, images: list[dict], uid: int = IMAGE_UID) -> None:
    from helpers import write_coco as helper  # noqa: PLC0415

    helper(path, images)
    os.chown(path, uid, uid)


def assert_files(root: Path, images: list[dict], blobs: list[bytes]) -> None:
    for record, data in zip(images, blobs, strict=True):
        path = root / record["file_name"]
        assert path.is_file(), f"missing {path}"
        got = path.read_bytes()
        assert hashlib.md5(got).digest() == hashlib.md5(data).digest(), f"{path}: bytes differ"
    partials = list(root.rglob("*.partial"))
    assert not partials, f"left-over partial files: {partials[:3]}"


def manifest_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM images GROUP BY state").fetchall())
    finally:
        db.close()


def s3_env(s3, bucket: str = BUCKET) -> list[str]:
    return [
        "-e",
        f"SCI_FETCH_BUCKET={bucket}",
        "-e",
        f"SCI_FETCH_ENDPOINT_URL={s3.endpoint_url}",
        "-e",
        "SCI_FETCH_REGION=us-west-2",
        "-e",
        "SCI_FETCH_PROGRESS=log",
    ]


# ---- the checks ------------------------------------------------------------------------------------


def check_version(built: Built) -> str:
    from sci_fetch import __version__

    out = built.podman.run(built.tag, "--version").stdout.decode().strip()
    assert out == f"sci-fetch {__version__}", out
    return out


def check_image_config(built: Built) -> None:
    fmt = "{{.Config.User}}|{{.Config.StopSignal}}|{{.Config.WorkingDir}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}"
    out = sh(["podman", "image", "inspect", "--format", fmt, built.tag]).stdout.decode().strip()
    assert out == '10001:10001|SIGTERM|/data|["sci-fetch"]|["download"]', out
    health = sh(["podman", "image", "inspect", "--format", "{{json .HealthCheck}}", built.tag], check=False)
    if health.returncode == 0:  # the field's name differs between podman versions
        assert "sci-fetch-healthcheck" in health.stdout.decode(), health.stdout


def check_env_credentials(built: Built, s3, work: Path) -> None:
    """Keys in AWS_* variables, profile "" in SCI_FETCH_PROFILE; COCO and output under /data.

    With a read-only root file system (tmpfs /tmp), as the Kubernetes example runs it.
    """
    images, blobs = seed_objects(s3, 12, seed=1)
    data = make_data_dir(work / "env")
    write_coco(data / "coco.json", images)
    proc = built.podman.run(
        "--read-only",
        "-v",
        f"{data}:/data",
        *s3_env(s3),
        "-e",
        f"AWS_ACCESS_KEY_ID={s3.access_key}",
        "-e",
        f"AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        "-e",
        "SCI_FETCH_PROFILE=",
        "-e",
        "SCI_FETCH_COCO=/data/coco.json",
        built.tag,
        check=False,
    )
    assert proc.returncode == 0, text(proc)
    assert_files(data / "images", images, blobs)
    assert manifest_counts(data / "images" / ".sci-fetch" / "manifest.sqlite") == {"done": len(images)}
    # the health command on a finished run, through the entrypoint
    status = built.podman.run("-v", f"{data}:/data", built.tag, "status", "images", "--health", check=False)
    assert status.returncode == 0 and "healthy" in text(status), text(status)


def check_profile_sharded(built: Built, s3, work: Path) -> None:
    """The shipped settings' profile "animl" from a mounted ~/.aws; two shards of an array job.

    As another uid (docker run --user UID:GID, for bind mounts owned by the user who runs docker):
    HOME=/home/sci still makes ~/.aws the mounted folder.
    """
    uid = 4242
    images, blobs = seed_objects(s3, 16, seed=2)
    data = make_data_dir(work / "profile", uid)
    write_coco(data / "coco.json", images, uid)
    aws = work / "aws"
    aws.mkdir()
    (aws / "config").write_text("[profile animl]\nregion = us-west-2\n")
    (aws / "credentials").write_text(
        f"[animl]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n"
    )
    for p in (aws, aws / "config", aws / "credentials"):
        os.chown(p, uid, uid)
        p.chmod(0o700 if p.is_dir() else 0o600)
    common = [
        "--user",
        f"{uid}:{uid}",
        "-v",
        f"{data}:/data",
        "-v",
        f"{aws}:/home/sci/.aws:ro",
        *s3_env(s3),
        "-e",
        "SCI_FETCH_SHARD_COUNT=2",
    ]
    for index_var, k in (("JOB_COMPLETION_INDEX", 0), ("AWS_BATCH_JOB_ARRAY_INDEX", 1)):
        proc = built.podman.run(*common, "-e", f"{index_var}={k}", built.tag, "download", "coco.json", check=False)
        assert proc.returncode == 0, text(proc)
    assert_files(data / "images", images, blobs)
    state = data / "images" / ".sci-fetch"
    shards = [manifest_counts(state / f"manifest-shard-{k}-of-2.sqlite").get("done", 0) for k in (0, 1)]
    assert sum(shards) == len(images) and all(shards), shards


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def _done(manifest: Path) -> int:
    try:
        return manifest_counts(manifest).get("done", 0)
    except sqlite3.Error:
        return 0


def check_stop_and_health(built: Built, s3, work: Path) -> None:
    """A slow run: healthy while it writes its manifest, unhealthy when stalled, exit 143 on SIGTERM."""
    images, blobs = seed_objects(s3, 80, seed=3)
    data = make_data_dir(work / "stop")
    write_coco(data / "coco.json", images)
    manifest = data / "images" / ".sci-fetch" / "manifest.sqlite"
    name = f"sci-fetch-image-test-{os.getpid()}-{int(time.time())}"
    common = [
        "-v",
        f"{data}:/data",
        *s3_env(s3),
        "-e",
        f"AWS_ACCESS_KEY_ID={s3.access_key}",
        "-e",
        f"AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        "-e",
        "SCI_FETCH_PROFILE=",
        "-e",
        "SCI_FETCH_CONCURRENCY=1",
    ]
    # 4 requests a second: about 20 s for the 80 images, time enough to look at it and stop it
    sh(
        built.podman.cmd(
            "--name",
            name,
            *common,
            "-e",
            "SCI_FETCH_MAX_REQUESTS_PER_SECOND=4",
            built.tag,
            "download",
            "coco.json",
            detach=True,
        )
    )
    try:
        _wait_for(lambda: _done(manifest) >= 2, 60, "the first images in the manifest")
        health = sh(["podman", "healthcheck", "run", name], check=False)
        assert health.returncode == 0, "podman healthcheck run: " + text(health)
        probe = sh(["podman", "exec", name, "sci-fetch-healthcheck"], check=False)
        assert probe.returncode == 0 and "running" in text(probe), text(probe)

        pid = int(sh(["podman", "inspect", "--format", "{{.State.Pid}}", name]).stdout.decode())
        os.kill(pid, signal.SIGSTOP)  # a stalled run: no more manifest writes
        try:
            time.sleep(4)
            probe = sh(["podman", "exec", "-e", "HEALTHCHECK_MAX_AGE=2", name, "sci-fetch-healthcheck"], check=False)
            assert probe.returncode == 1 and "stalled" in text(probe), text(probe)
        finally:
            os.kill(pid, signal.SIGCONT)

        started = time.monotonic()
        sh(["podman", "stop", "--time", "30", name], timeout=60)
        took = time.monotonic() - started
        code = int(sh(["podman", "wait", name]).stdout.decode().strip())
        logs = text(sh(["podman", "logs", name], check=False))
        assert code == 143, f"exit {code} after SIGTERM:\n{logs[-3000:]}"
        assert took < 25, f"podman stop took {took:.0f}s: SIGTERM was not handled in time"
        assert "SIGTERM" in logs, logs[-2000:]
    finally:
        sh(["podman", "rm", "--force", name], check=False)
    counts = manifest_counts(manifest)
    assert 0 < counts.get("done", 0) < len(images), counts
    assert not list((data / "images").rglob("*.partial"))

    # resume to the end: same command, exit 0, then healthy through the HEALTHCHECK command
    proc = built.podman.run(*common, built.tag, "download", "coco.json", check=False)
    assert proc.returncode == 0, text(proc)
    assert_files(data / "images", images, blobs)


CHECKS = [("image config", check_image_config), ("--version", check_version)]
S3_CHECKS = [
    ("download, environment credentials", check_env_credentials),
    ("sharded download, mounted ~/.aws profile", check_profile_sharded),
    ("SIGTERM and HEALTHCHECK", check_stop_and_health),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild-base", action="store_true", help="debootstrap the base image again")
    parser.add_argument("--build-only", action="store_true", help="build the image and stop")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"image test cannot run: {reason}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(TESTS))
    from sci_fetch.demo.seaweed import SeaweedS3

    started = time.monotonic()
    built = build(args.rebuild_base)
    log(f"built in {time.monotonic() - started:.0f}s")
    if args.build_only:
        return 0
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="sci-fetch-image-test-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        with SeaweedS3(work / "seaweed", buckets=[BUCKET]) as s3:
            for name, check in CHECKS + S3_CHECKS:
                t0 = time.monotonic()
                try:
                    if (name, check) in S3_CHECKS:
                        sub = work / f"check{passed + failed}"
                        sub.mkdir()
                        sub.chmod(0o755)
                        check(built, s3, sub)
                    else:
                        check(built)
                except Exception as exc:  # noqa: BLE001 - report every check
                    failed += 1
                    log(f"FAILED {name}: {exc}")
                else:
                    passed += 1
                    log(f"ok {name} ({time.monotonic() - t0:.1f}s)")
    log(f"total {time.monotonic() - started:.0f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
