"""The AWS Common Runtime's S3 client as a peer: every key of a list downloaded to its file.

``python bench/crt_download.py --list FILE --endpoint-url URL --bucket B --concurrency C [--ca-file CA]``

FILE has one ``KEY<TAB>DEST`` line per object. One ``GET_OBJECT`` meta-request per key, written by
the CRT itself to DEST (``recv_filepath``), at most C meta-requests in flight and at most C
connections: what aws-cli's ``crt`` transfer client and Mountpoint run on. Keys are URL-encoded in the
path (path-style addressing, ``Host: 127.0.0.1:PORT``), requests are signed with SigV4 from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``; over HTTPS only the CA of ``--ca-file`` is
trusted (a server whose certificate the CA did not sign makes the CRT retry without end: the
benchmark's timeout ends that). Like s5cmd it verifies nothing beyond what HTTP gives. Exit 0 when every object arrived
with a 2xx answer, else 1 with one line per failure (the first 10) on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from urllib.parse import quote, urlsplit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", type=Path, required=True, help="KEY<TAB>DEST lines")
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-west-2"))
    p.add_argument("--concurrency", type=int, default=64, help="meta-requests in flight and connections (default 64)")
    p.add_argument("--ca-file", type=Path, help="trust only this CA (PEM) over HTTPS")
    return p.parse_args(argv)


def make_client(args: argparse.Namespace):
    from awscrt.auth import AwsCredentialsProvider
    from awscrt.io import ClientBootstrap, ClientTlsContext, DefaultHostResolver, EventLoopGroup, TlsContextOptions
    from awscrt.s3 import S3Client, S3RequestTlsMode

    https = urlsplit(args.endpoint_url).scheme == "https"
    tls_options = None
    if https:
        opts = TlsContextOptions()
        if args.ca_file:
            opts.override_default_trust_store_from_path(ca_filepath=str(args.ca_file))
        tls_options = ClientTlsContext(opts).new_connection_options()
    elg = EventLoopGroup()
    bootstrap = ClientBootstrap(elg, DefaultHostResolver(elg))
    creds = AwsCredentialsProvider.new_static(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], os.environ.get("AWS_SESSION_TOKEN")
    )
    return S3Client(
        bootstrap=bootstrap,
        region=args.region,
        credential_provider=creds,
        tls_mode=S3RequestTlsMode.ENABLED if https else S3RequestTlsMode.DISABLED,
        tls_connection_options=tls_options,
        max_active_connections_override=args.concurrency,
    )


def read_list(path: Path) -> list[tuple[str, Path]]:
    items = []
    for line in path.read_text().splitlines():
        if line:
            key, dest = line.split("\t", 1)
            items.append((key, Path(dest)))
    return items


def download_all(client, items: list[tuple[str, Path]], host: str, bucket: str, concurrency: int) -> list[str]:
    """Every item, at most ``concurrency`` in flight; returns one line per failure."""
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.s3 import S3RequestType

    slots = threading.Semaphore(concurrency)
    failures: list[str] = []
    pending = []
    for key, dest in items:
        dest.parent.mkdir(parents=True, exist_ok=True)
        slots.acquire()

        def on_done(error=None, status_code=None, key=key, **_kw) -> None:
            if error is not None or not (status_code and 200 <= status_code < 300):
                failures.append(f"{key}: status {status_code}, {error}")
            slots.release()

        request = HttpRequest("GET", f"/{bucket}/{quote(key, safe='/~')}", HttpHeaders([("Host", host)]))
        pending.append(
            client.make_request(
                type=S3RequestType.GET_OBJECT, request=request, recv_filepath=str(dest), on_done=on_done
            )
        )
    for meta in pending:
        meta.finished_future.exception()  # wait; on_done has recorded the outcome
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    items = read_list(args.list)
    u = urlsplit(args.endpoint_url)
    host = u.netloc  # with the port: the CRT connects to the Host header's host and port
    client = make_client(args)
    failures = download_all(client, items, host, args.bucket, args.concurrency)
    for line in failures[:10]:
        print(f"crt_download: {line}", file=sys.stderr)
    if failures:
        print(f"crt_download: {len(failures)} of {len(items)} objects failed", file=sys.stderr)
        return 1
    print(f"crt_download: {len(items)} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
