#!/opt/venv/bin/python
"""The image's HEALTHCHECK (and the Kubernetes livenessProbe): is this container's download alive?

Installed as /usr/local/bin/sci-fetch-healthcheck. It finds the ``sci-fetch download`` process of
this container, works out that process's own manifest from its command line, environment and working
directory (so flags, SCI_FETCH_* variables, /config/settings.toml and the shard index from
JOB_COMPLETION_INDEX / AWS_BATCH_JOB_ARRAY_INDEX all count), and runs

    sci-fetch status --manifest THAT_MANIFEST --health --max-age $HEALTHCHECK_MAX_AGE (default 120)

Only this shard's manifest is read: with N shards writing into one shared /data, another shard's
stall or failure must not make this container unhealthy (and get it restarted).

Exit 0: healthy (the run writes its manifest, or ended with exit code 0, or no download runs here).
Exit 1: unhealthy (no manifest write for too long, last run ended non-zero, or no manifest yet).
Docker reserves exit code 2, so every failure is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MAX_AGE = "120"


def find_download(only: int | None = None) -> tuple[int, list[str]] | None:
    """(pid, argv after the program name) of the lowest-numbered ``sci-fetch download`` process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if only is not None and int(entry.name) != only:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # NUL-terminated arguments; an empty one (--profile "") is kept
        args = [a.decode(errors="replace") for a in raw.removesuffix(b"\0").split(b"\0")] if raw else []
        for i, arg in enumerate(args):
            if os.path.basename(arg) == "sci-fetch":
                rest = args[i + 1 :]
                break
            if arg == "-m" and i + 1 < len(args) and args[i + 1] == "sci_fetch":
                rest = args[i + 2 :]
                break
        else:
            continue
        if "download" in rest:
            found.append((int(entry.name), rest))
    return min(found) if found else None


def adopt_context(pid: int) -> None:
    """Read settings as that process did: its environment and its working directory."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    except OSError:
        env = None  # another uid: keep ours, which the container gave both of us
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        os.chdir(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        pass


def manifest_of(argv: list[str]) -> Path:
    from sci_fetch.cli import build_parser
    from sci_fetch.commands.common import settings_from_args
    from sci_fetch.keys.shard import parse_shard

    args = build_parser().parse_args(argv)
    if getattr(args, "shard", None):
        args.shard_index, args.shard_count = parse_shard(args.shard)
    return settings_from_args(args).manifest_path.resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sci-fetch-healthcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, default=None, help="check this download process (default: find it)")
    pid_only = parser.parse_args(argv).pid
    found = find_download(pid_only)
    if found is None:
        if pid_only is not None:
            print(f"unhealthy: process {pid_only} is not a sci-fetch download")
            return 1
        print("healthy: no sci-fetch download runs in this container")
        return 0
    pid, argv = found
    max_age = os.environ.get("HEALTHCHECK_MAX_AGE") or DEFAULT_MAX_AGE
    adopt_context(pid)
    try:
        manifest = manifest_of(argv)
    except SystemExit:  # argparse already printed why
        print(f"unhealthy: cannot read the settings of process {pid}")
        return 1
    except Exception as exc:  # noqa: BLE001 - any reason is worth one line and "unhealthy"
        print(f"unhealthy: cannot read the settings of process {pid}: {exc}")
        return 1
    if not manifest.is_file():
        print(f"unhealthy: no manifest yet at {manifest}")
        return 1
    from sci_fetch.cli import main as sci_fetch

    code = sci_fetch(["status", "--manifest", str(manifest), "--health", "--max-age", max_age])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
