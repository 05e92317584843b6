"""The Python API, for notebooks and scripts: ``sci_fetch.download(...)`` and ``sci_fetch.crops(...)``.

The ``download`` and ``crops`` commands are built on the functions here; the API differs only in what it
does at the end: it returns a result (or a pandas DataFrame) and raises sci_fetch's own exceptions
where the command prints one line and exits. Inside a running event loop (Jupyter, Colab), where
``asyncio.run`` fails, the download runs in a worker thread with its own loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sci_fetch.engine.job import DownloadResult, check_download_inputs, download_with
from sci_fetch.engine.loop import run_coroutine
from sci_fetch.errors import InputError, SciFetchError, UsageError
from sci_fetch.exits import ExitCode, StopReason
from sci_fetch.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas

    from sci_fetch.crops.options import CropOptions
    from sci_fetch.crops.run import CropSummary

__all__ = [
    "DownloadResult",
    "RunStopped",
    "check_download_inputs",
    "crops",
    "download",
    "download_with",
    "make_crops",
    "run_coroutine",
]


# Exit codes of a run that ended on its own; any other one means it was stopped (see RunStopped).
_FINISHED = (ExitCode.OK, ExitCode.INCOMPLETE)


class RunStopped(SciFetchError):
    """A download stopped before its end (credentials, disk, signal); ``result`` holds what it did."""

    def __init__(self, result: DownloadResult) -> None:
        self.result = result
        reason = result.message or f"the run was stopped ({result.stop_reason})"
        super().__init__(f"{reason}; exit code {result.exit_code}; run it again to continue")


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel, where stderr is not a terminal but a bar still renders."""
    return "ipykernel" in sys.modules


# ---- download --------------------------------------------------------------------------------


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
    if result.stop_reason in (StopReason.input, StopReason.usage):
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
    from sci_fetch.crops.run import run_crops  # here: Pillow and the crop modules would cost every command their import

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

    from sci_fetch.crops.options import crop_options
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
        make_crops(settings.coco, settings.output, crop_options(settings), found, progress=progress)
    finally:
        progress.close()
    return pandas.read_csv(crop_options(settings).csv_path(), keep_default_na=False, na_values=[""])
