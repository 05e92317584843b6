"""``sci-fetch crops``: every labelled box of a COCO file as a JPEG crop, plus the crop-label CSV.

Exit codes (as ``download``'s where they overlap): 0 every box was cropped or left out by the
options (exclude, keep, min-confidence, min-size); 1 some boxes got no crop for another reason
(null box, not downloaded, corrupt image, ...: each is in the rejects CSV) or a worker died;
2 bad options or input; 4 a disk error stopped the run; 130 interrupted. Crops already written are
kept in every case, and running the same command again resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sci_fetch.commands.common import add_common_flags, add_model_flag, show_value
from sci_fetch.crops.options import CropOptions, crop_options
from sci_fetch.crops.progress import CropProgress
from sci_fetch.errors import DiskError, InputError, SciFetchError, UsageError
from sci_fetch.exits import ExitCode
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.keys.mapping import Variant
from sci_fetch.settings import load_settings

HELP = "crop every labelled box of a COCO file from the downloaded images and write the crop-label CSV"

ENV = "SCI_FETCH_CROPS__"

# Per-field argparse details; help text comes from the CropOptions field descriptions.
_FLAGS: dict[str, dict[str, Any]] = {
    "crops_dir": {"type": Path, "metavar": "DIR"},
    "csv": {"type": Path, "metavar": "CSV"},
    "rejects_csv": {"type": Path, "metavar": "CSV"},
    "padding": {"type": float, "metavar": "FRACTION"},
    "min_size": {"type": float, "metavar": "PIXELS"},
    "jpeg_quality": {"type": int, "metavar": "1-100"},
    "exclude": {
        "action": "append",
        "metavar": "NAMES",
        "extra": " Comma-separated or repeated; --exclude '' excludes nothing.",
    },
    "min_confidence": {"type": float, "metavar": "0-1"},
    "naming": {"choices": ["nested", "flat"]},
    "label_map": {"metavar": "FILE|sci"},
    "keep": {"action": "append", "metavar": "LABELS", "extra": " Comma-separated or repeated."},
    "workers": {"type": int, "metavar": "N"},
    "variant": {"choices": [v.value for v in Variant]},
    "max_size": {"type": int, "metavar": "PIXELS"},
    "size": {"metavar": "WxH"},
    "decoder": {"choices": ["auto", "vips", "pillow"]},
}
_SKIP = {"after_download"}  # a `download` option, not one of this command's


def _default_text(name: str) -> str:
    field = CropOptions.model_fields[name]
    value = field.default
    if value is None:
        return "not set"
    if isinstance(value, tuple):  # --size WxH
        return "x".join(map(str, value))
    return show_value(value) or "none"


def add_crop_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per CropOptions field; every default is None so an unset flag overrides nothing."""
    for name, field in CropOptions.model_fields.items():
        if name in _SKIP:
            continue
        spec = dict(_FLAGS.get(name, {}))
        extra = spec.pop("extra", "")
        default = "" if "default" in (field.description or "") else f"default: {_default_text(name)}; "
        add_model_flag(parser, name, field, f"{field.description}.{extra} ({default}env {ENV}{name.upper()})", **spec)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "crops",
        help=HELP,
        description=HELP + ". Run it again to resume: a crop that is already right is not made again. "
        "Exit codes: 0 every box cropped or left out by the options, 1 some boxes had no crop for another "
        "reason (see the rejects CSV), 2 bad options or input, 4 disk error, 130 interrupted.",
    )
    parser.add_argument(
        "coco",
        nargs="?",
        type=Path,
        default=None,
        help="COCO Camera Traps JSON file (Animl export); default the settings' coco",
    )
    add_common_flags(parser)  # --config (its [crops] table) and -v
    parser.add_argument(
        "--output",
        "--images-dir",
        dest="output",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder the images were downloaded to, as <output>/<file_name> (download's --output; default: images)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help=f"the download's manifest, to tell images not downloaded yet and the md5 of those that are "
        f"(default: every manifest in OUTPUT/{STATE_DIR}/, the plain one and each shard's)",
    )
    add_crop_flags(parser)
    parser.set_defaults(run=run)


def crop_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The crop flags that were given, as a dict for ``CropOptions`` (or ``Settings(crops=...)``)."""
    given: dict[str, Any] = {}
    for name in CropOptions.model_fields:
        value = getattr(args, name, None)
        if value is None:
            continue
        if isinstance(value, list):  # append-flags: each may itself be comma-separated
            value = [part for item in value for part in item.split(",")]
        given[name] = value
    return given


def run_and_report(coco: Path, images_dir: Path, options: CropOptions, manifest: Path | None = None) -> int:
    """Run the crops, print the summary, return the exit code: what `download` calls when it ends.

    UsageError/InputError propagate (the CLI prints them); a disk error or a dead worker is printed here.
    """
    from sci_fetch.api import make_crops  # the Python API's crop step; pandas is imported only there

    progress = CropProgress()
    try:
        summary = make_crops(coco, images_dir, options, manifest, progress=progress)
    except DiskError as exc:
        print(f"sci-fetch: error: {exc}; crops made so far are kept, run the same command again", file=sys.stderr)
        return ExitCode.DISK
    except (UsageError, InputError):
        raise
    except SciFetchError as exc:  # a worker process died: incomplete, resumable
        print(f"sci-fetch: error: {exc}", file=sys.stderr)
        return ExitCode.INCOMPLETE
    finally:
        progress.close()
    print("\n".join(summary.lines()))
    return summary.exit_code


def run(args: argparse.Namespace) -> int:
    """Flags over SCI_FETCH_CROPS__* over the [crops] table of settings.toml, as for download."""
    settings = load_settings(
        args.config,
        {"coco": args.coco, "output": args.output, "manifest": args.manifest, "crops": crop_overrides(args)},
    )
    if settings.coco is None:
        raise UsageError("no COCO file given: sci-fetch crops COCO.json [--output IMAGES_DIR]")
    # Only a manifest that was named: otherwise run_crops reads every manifest in the output folder,
    # the plain one and each shard's, so crops after a sharded download see every image.
    manifest = settings.manifest
    return run_and_report(settings.coco, settings.output, crop_options(settings), manifest)
