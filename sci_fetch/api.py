"""The Python API, for notebooks and scripts: ``sci_fetch.download(...)`` and ``sci_fetch.crops(...)``.

The ``download`` and ``crops`` commands are built on the functions here; the API differs only in what it
does at the end: it returns a result (or a pandas DataFrame) and raises sci_fetch's own exceptions
where the command prints one line and exits. Inside a running event loop (Jupyter, Colab), where
``asyncio.run`` fails, the download runs in a worker thread with its own loop.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sci_fetch.engine.loop import run as run_loop
from sci_fetch.errors import InputError, SciFetchError, UsageError
from sci_fetch.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas

    from sci_fetch.crops.options import CropOptions
    from sci_fetch.crops.run import CropSummary
    from sci_fetch.engine.run import RunResult

T = TypeVar("T")

# Exit codes of a run that ended on its own; any other one means it was stopped (see RunStopped).
_FINISHED = (0, 1)


@dataclass(frozen=True)
class DownloadResult:
    """What a download run leaves: the figures of the summary, read from the manifest."""

    exit_code: int  # as the command's: 0 all done, 1 some failed/missing/invalid, 3/4/130/143 stopped
    counts: dict[str, int]  # images of the COCO file per state: done, failed, missing, pending, ...
    failures_path: Path  # every image not done and every unusable record, as CSV
    failures_count: int
    manifest_path: Path
    output: Path
    stop_reason: str | None = None
    message: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # this run's counters (fetched, bytes, rates, retries)
    run_stats: Any = field(default=None, repr=False, compare=False)  # the same as the engine's Stats, for the summary

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RunStopped(SciFetchError):
    """A download stopped before its end (credentials, disk, signal); ``result`` holds what it did."""

    def __init__(self, result: DownloadResult) -> None:
        self.result = result
        reason = result.message or f"the run was stopped ({result.stop_reason})"
        super().__init__(f"{reason}; exit code {result.exit_code}; run it again to continue")


# ---- running a coroutine whether or not an event loop is already running ---------------------


class _ThreadLoop(asyncio.SelectorEventLoop):
    """A loop for a worker thread: signal handlers are kept here, since only the main thread may set them."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[int, tuple[Callable[..., object], tuple]] = {}

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        self.handlers[sig] = (callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        return self.handlers.pop(sig, None) is not None


def run_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run`` when no loop runs; else run it in a worker thread with its own loop.

    In the thread, Ctrl-C (a notebook's "interrupt kernel") reaches the main thread as KeyboardInterrupt;
    it is handed to the run's SIGINT handler, so the run stops as the command does on SIGINT.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_loop(factory())  # type: ignore[arg-type]
    box: dict[str, Any] = {}
    loops: list[_ThreadLoop] = []
    finished = threading.Event()

    def work() -> None:
        try:
            with asyncio.Runner(loop_factory=lambda: loops.append(_ThreadLoop()) or loops[-1]) as runner:
                box["value"] = runner.run(factory())  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller's thread, raised there
            box["error"] = exc
        finally:
            finished.set()

    def forward_sigint() -> bool:
        handler = loops[0].handlers.get(signal.SIGINT) if loops else None
        if handler is None:
            return False
        loops[0].call_soon_threadsafe(handler[0], *handler[1])
        return True

    thread = threading.Thread(target=work, name="sci-fetch-run", daemon=True)
    started = False
    while not finished.is_set():
        # An Event, not thread.join: a KeyboardInterrupt inside join() can mark a live thread as stopped
        # (CPython 3.11's bpo-45274 handling releases the thread's own lock).
        try:
            if not started:
                started = True
                thread.start()
            finished.wait(0.2)
        except KeyboardInterrupt:
            if not forward_sigint():
                raise
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel, where stderr is not a terminal but a bar still renders."""
    return "ipykernel" in sys.modules


# ---- download --------------------------------------------------------------------------------


def check_download_inputs(settings: Settings) -> None:
    """Everything that makes a run pointless, checked before the output folder or manifest is created."""
    coco = settings.coco
    if coco is None:
        raise UsageError("no COCO file given: sci-fetch download COCO.json (or set 'coco' in settings.toml)")
    coco = Path(coco)
    if coco.is_dir():
        raise UsageError(f"COCO file {coco} is a directory; give the COCO JSON file")
    if not coco.is_file():
        raise UsageError(f"COCO file {coco} does not exist")
    check_coco_opening(coco)
    if settings.output.exists() and not settings.output.is_dir():
        raise UsageError(f"output {settings.output} is a file; give a folder for the images")
    settings.check_profile()


def check_coco_opening(coco: Path) -> None:
    """Raise InputError unless the file is readable JSON whose ``images`` array starts (and its first record parses)."""
    from sci_fetch.coco.source import iter_images

    records = iter_images(coco)
    try:
        next(records, None)  # a bad first record is a RecordError value, listed by the run; not raised
    finally:
        records.close()


def download_with(settings: Settings, storage_factory: Callable[..., Any] | None = None) -> DownloadResult:
    """Run one download from typed settings and write failures.csv; what the command and the API share."""
    from sci_fetch.engine.run import run_download
    from sci_fetch.manifest.report import write_failures
    from sci_fetch.manifest.store import Manifest
    from sci_fetch.storage.s3 import S3Storage

    check_download_inputs(settings)
    factory = storage_factory or S3Storage
    result: RunResult = run_coroutine(lambda: run_download(settings, factory))
    failures_path = settings.state_file("failures", "csv")
    manifest = Manifest(settings.manifest_path)
    try:
        failures_count = write_failures(manifest, result.run_id, failures_path)
    finally:
        manifest.close()
    return DownloadResult(
        exit_code=result.exit_code,
        counts=dict(result.counts),
        failures_path=failures_path,
        failures_count=failures_count,
        manifest_path=settings.manifest_path,
        output=settings.output,
        stop_reason=result.stop_reason,
        message=result.message,
        stats=result.stats.as_dict(),
        run_stats=result.stats,
    )


def _settings(config: str | Path | None, values: dict[str, Any]) -> Settings:
    return load_settings(
        Path(config) if config is not None else None, {k: v for k, v in values.items() if v is not None}
    )


def download(
    coco: str | Path, output: str | Path | None = None, *, config: str | Path | None = None, **settings: Any
) -> DownloadResult:
    """Download every image ``coco`` names into ``output`` (default: the settings' ``output``, ``images``);
    run it again to resume.

    ``settings`` are any of settings.toml's names (``bucket="..."``, ``anonymous=True``,
    ``key_template="..."``, ``concurrency=32``); they win over ``SCI_FETCH_*`` and the settings file.
    Returns a DownloadResult for a run that ended on its own (``exit_code`` 0, or 1 when some images
    failed or are missing: see ``failures_path``). Raises UsageError / InputError for bad settings or
    input (nothing is created) and RunStopped when the run was stopped (credentials, disk, interrupt).
    """
    if "progress" not in settings and in_notebook():
        settings["progress"] = "bar"
    resolved = _settings(
        config, {**settings, "coco": Path(coco), "output": Path(output) if output is not None else None}
    )
    result = download_with(resolved)
    if result.stop_reason in ("input", "usage"):
        raise InputError(result.message or f"{coco}: the COCO file could not be read to its end")
    if result.exit_code not in _FINISHED:
        raise RunStopped(result)
    return result


# ---- crops -----------------------------------------------------------------------------------


def make_crops(
    coco: Path,
    images_dir: Path,
    options: CropOptions,
    manifest: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CropSummary:
    """Crop every labelled box and write the crop-label CSV; what the command and the API share."""
    from sci_fetch.crops.run import run_crops  # here: pandas would cost every command its import

    return run_crops(Path(coco), Path(images_dir), options, manifest, progress=progress)


def crops(
    coco: str | Path | None = None,
    output: str | Path | None = None,
    *,
    config: str | Path | None = None,
    manifest: str | Path | None = None,
    **options: Any,
) -> pandas.DataFrame:
    """Crop every labelled box of ``coco`` from the images under ``output`` (default: the settings' ``output``);
    returns the crop table.

    ``options`` are the ``[crops]`` settings (``crops_dir="crops"``, ``padding=0.1``, ``square=True``,
    ``label_map="sci"``, ``exclude=[...]``, ...). The DataFrame is the crop-label CSV (``image_path``,
    ``species_label``, ...); boxes without a crop are in ``crops_rejected.csv`` beside it. Raises
    UsageError / InputError for bad options or input and DiskError when the disk fails.
    """
    import pandas

    from sci_fetch.commands.crops import for_download
    from sci_fetch.crops.progress import CropProgress

    settings = _settings(
        config,
        {
            "coco": Path(coco) if coco is not None else None,
            "output": Path(output) if output is not None else None,
            "manifest": Path(manifest) if manifest is not None else None,
            "crops": {k: v for k, v in options.items() if v is not None},
        },
    )
    if settings.coco is None:
        raise UsageError("no COCO file given: sci_fetch.crops('export.json', 'images')")
    found = settings.manifest_path if settings.manifest_path.exists() else None
    progress = CropProgress(notebook=in_notebook(), lines=False)
    try:
        make_crops(settings.coco, settings.output, for_download(settings), found, progress=progress)
    finally:
        progress.close()
    return pandas.read_csv(settings.crops.csv_path(), keep_default_na=False, na_values=[""])
