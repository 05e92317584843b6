"""``sci-fetch gallery``: one static HTML page of the crops per label, in the crops folder, to open or share.

Exit codes: 0 written; 2 no crop CSV or bad options; 4 the page could not be written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sci_fetch.commands.common import add_common_flags, add_output_flag
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.settings import load_settings

HELP = (
    "write crops/gallery.html: per label the count and a grid of crops, the reasons boxes got none, the run's figures"
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gallery",
        help=HELP,
        description=HELP + ". The page links the crops by relative paths, so the crops folder can be zipped and "
        "shared. Exit codes: 0 written, 2 no crop CSV or bad options, 4 the page could not be written.",
    )
    add_common_flags(parser)
    add_output_flag(
        parser,
        "--images-dir",
        what=f"folder the images were downloaded to, for the download's figures from DIR/{STATE_DIR}/",
    )
    parser.add_argument(
        "--crops-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder the crops were written under; the page goes there (default: crops, or the [crops] table's)",
    )
    parser.add_argument(
        "--csv", type=Path, default=None, metavar="CSV", help="crop-label CSV (default: CROPS_DIR/crops.csv)"
    )
    parser.add_argument(
        "--rejects-csv",
        type=Path,
        default=None,
        metavar="CSV",
        help="CSV of the boxes without a crop (default: CROPS_DIR/crops_rejected.csv)",
    )
    parser.add_argument(
        "--per-label", type=int, default=24, metavar="N", help="thumbnails per label, picked at random (default: 24)"
    )
    parser.add_argument(
        "--dest", type=Path, default=None, metavar="HTML", help="where the page goes (default: CROPS_DIR/gallery.html)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sci_fetch.crops.gallery import GalleryOptions, write_gallery
    from sci_fetch.crops.options import crop_options

    crops = {
        k: v
        for k, v in {"crops_dir": args.crops_dir, "csv": args.csv, "rejects_csv": args.rejects_csv}.items()
        if v is not None
    }
    settings = load_settings(args.config, {"output": args.output, "crops": crops or None})
    options = crop_options(settings)
    manifest = settings.manifest_path if settings.manifest_path.is_file() else None
    page = write_gallery(
        options.crops_dir,
        GalleryOptions(
            csv_path=options.csv_path(),
            rejects_path=options.rejects_path(),
            dest=args.dest,
            per_label=args.per_label,
            images_dir=settings.output,
            manifest=manifest,
        ),
    )
    print(f"gallery: {page}")
    return 0
