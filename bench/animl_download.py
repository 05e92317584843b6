"""A re-creation of the method of Animl's ``utils/download_images.py``: the baseline users have today.

What it keeps from that script (the method, not its text): the whole COCO file is loaded with
``json.load``; every image record goes into a ``queue.Queue``; ``min(max_threads, int(N ** (1/3)))``
threads (``--max-threads`` defaults to 50) each loop ``while not q.empty(): q.get()``, create the
destination folder and call ``download_file`` on ONE default boto3 client shared by all threads
(its default pool is 10 connections; ``download_file`` sends a HEAD, then a GET, through
s3transfer); a tqdm bar is updated per file; an exception stops that thread. No verification.

What differs, so it can run here: the bucket and the endpoint are arguments (the original names the
bucket ``animl-images-serving-prod`` and the profile ``animl``), and the exit status is 1 when any
thread hit an exception (the original only prints it).

Run: python bench/animl_download.py --coco-file C --output-dir D --bucket B --endpoint-url URL
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from queue import Queue

import boto3
from tqdm import tqdm


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco-file", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-threads", type=int, default=50)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument(
        "--variant", default="original", help="original uses serving_bucket_key; else <variant>/<id>-<variant>.jpg"
    )
    args = parser.parse_args()

    client = boto3.client("s3", endpoint_url=args.endpoint_url)  # the default client, shared by all threads
    errors: list[str] = []

    def key_of(record: dict) -> str:
        if args.variant == "original":
            return record["serving_bucket_key"]
        return f"{args.variant}/{record['id']}-{args.variant}.jpg"

    def download_image_file(dest_dir: str, pbar: tqdm) -> None:
        while not queue.empty():
            record = queue.get()
            key = key_of(record)
            try:
                full_dest_path = os.path.join(dest_dir, record["file_name"])
                Path(full_dest_path).parents[0].mkdir(parents=True, exist_ok=True)
                client.download_file(args.bucket, key, full_dest_path)
                pbar.update()
            except Exception as exc:  # the original prints the error and ends the thread
                print(f"An exception occurred while downloading {key}:\n{exc}", file=sys.stderr)
                errors.append(key)
                return

    os.makedirs(args.output_dir, exist_ok=True)
    with open(args.coco_file) as fh:
        cct = json.load(fh)
    queue: Queue = Queue()
    for image in cct["images"]:
        queue.put(image)
    print(f"Downloading {queue.qsize()} image files to {args.output_dir}")
    pbar = tqdm(total=queue.qsize(), delay=1)
    thread_count = max(1, min(args.max_threads, int(queue.qsize() ** (1 / 3))))
    print(f"Running operation on {thread_count} threads")
    threads = [
        threading.Thread(target=download_image_file, kwargs={"dest_dir": args.output_dir, "pbar": pbar})
        for _ in range(thread_count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pbar.close()
    print("All files have been downloaded." if not errors else f"{len(errors)} threads stopped on an error")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
