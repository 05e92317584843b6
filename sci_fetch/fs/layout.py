"""Where sci_fetch keeps its own files under an output folder: the one place these names are spelled.

``<output>/.sci-fetch/`` holds the manifest (one, or one per shard: ``manifest-shard-K-of-N.sqlite``)
and the per-shard state files beside it (``status.json``, ``failures.csv``, each with the shard's
suffix). An unfinished file is ``<name>.partial`` beside its destination. Pure names, no I/O beyond a
glob, and no imports from the rest of the package, so every layer (and a crop worker) may use it.
"""

from __future__ import annotations

from pathlib import Path

# The folder under the output dir that holds sci_fetch's own state; no image may be written into it.
STATE_DIR = ".sci-fetch"
# The ending of a file still being written; no image may be named so.
PARTIAL_SUFFIX = ".partial"
MANIFEST_STEM = "manifest"
MANIFEST_EXT = "sqlite"
STATUS_FILE = ("status", "json")
FAILURES_FILE = ("failures", "csv")


def shard_suffix(index: int | None, count: int) -> str:
    """``-shard-K-of-N`` for a sharded run, nothing for a whole one."""
    return f"-shard-{index}-of-{count}" if count > 1 else ""


def state_dir(output: Path) -> Path:
    return output / STATE_DIR


def manifest_path(output: Path, suffix: str = "") -> Path:
    """The manifest a run of ``output`` (with a shard ``suffix``) keeps, unless one is named."""
    return state_dir(output) / f"{MANIFEST_STEM}{suffix}.{MANIFEST_EXT}"


def state_file(folder: Path, name: tuple[str, str], suffix: str = "") -> Path:
    """A per-shard file in the state folder ``folder``: ``state_file(dir, STATUS_FILE, "-shard-0-of-2")``."""
    stem, ext = name
    return folder / f"{stem}{suffix}.{ext}"


def manifests_in(output: Path) -> list[Path]:
    """Every manifest a download left under ``output``: the plain one, then each shard's, those that exist."""
    folder = state_dir(output)
    found = [manifest_path(output), *sorted(folder.glob(f"{MANIFEST_STEM}-shard-*-of-*.{MANIFEST_EXT}"))]
    return [p for p in found if p.is_file()]


def partial_path(dest: Path) -> Path:
    """Where ``dest`` is written before it is complete."""
    return dest.with_name(dest.name + PARTIAL_SUFFIX)
