"""Client CPU per S3 GET, isolated from bodies and disks: where a lighter request path would stand.

``python -m bench.micro_request [--requests 3000] [--concurrency 64]`` starts SeaweedFS, seeds small
objects (2 KB, so moving bytes costs nothing) and GETs them in one asyncio process several ways,
printing the client's CPU (``time.process_time``) per request:

- ``aiobotocore``: ``client.get_object`` + ``body.read()`` with sci_fetch's client settings;
- ``aiobotocore, endpoint cache fixed``: the same with ``Key`` (and ``Prefix``, ``CopySource``) left
  out of the endpoint-resolution parameters: botocore caches the resolved endpoint by those
  parameters, and S3's ruleset declares ``Key`` without using it, so with a different key on every
  request the cache never hits and the whole rule tree is evaluated per request (botocore issue
  #3528, fixed upstream by PR #3692 after the botocore sci_fetch pins);
- ``aiohttp + botocore SigV4Auth``: the request signed by botocore's signer alone, sent with a plain
  aiohttp session (no client, no event hooks, no endpoint rules, no response parser);
- ``aiohttp, unsigned``: the floor: the same GET with no signature (the bucket is not public, so
  this one only measures the HTTP client; the server answers 403).

Not part of ``python -m bench``; a tool for whoever changes the engine's request path.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import shutil
import tempfile
import time
from pathlib import Path


async def _drive(n: int, concurrency: int, one) -> float:
    keys = iter(range(n))

    async def worker() -> None:
        for i in keys:
            await one(i)

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - t0) / n * 1e6


async def main_async(args) -> None:
    import aioboto3
    import aiohttp
    from aiobotocore.config import AioConfig
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from sci_fetch.demo.seaweed import SeaweedS3

    work = Path(tempfile.mkdtemp(prefix="sci-fetch-micro-"))
    try:
        with SeaweedS3(work / "weed", buckets=["micro"]) as s3:
            client = s3.client()
            keys = [f"original/sci_bench:{random.getrandbits(128):032x}-original.jpg" for _ in range(args.objects)]
            for k in keys:
                client.put_object(Bucket="micro", Key=k, Body=random.randbytes(2048))
            url = s3.endpoint_url
            results = {}
            config = AioConfig(
                max_pool_connections=args.concurrency,
                retries={"total_max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                tcp_keepalive=True,
            )
            session = aioboto3.Session(
                aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key, region_name="us-west-2"
            )
            for fixed in (False, True):
                async with session.client("s3", endpoint_url=url, config=config) as c:
                    if fixed:
                        resolver = c._ruleset_resolver  # noqa: SLF001
                        original = resolver._get_provider_params  # noqa: SLF001

                        async def params(*a, _original=original, **kw):
                            p = await _original(*a, **kw)
                            for name in ("Key", "Prefix", "CopySource"):
                                p.pop(name, None)
                            return p

                        resolver._get_provider_params = params  # noqa: SLF001

                    async def one(i, c=c):
                        resp = await c.get_object(Bucket="micro", Key=keys[i % len(keys)])
                        async with resp["Body"] as body:
                            await body.read()

                    await _drive(200, args.concurrency, one)  # warm the pool
                    name = "aiobotocore, endpoint cache fixed" if fixed else "aiobotocore (as sci_fetch)"
                    results[name] = await _drive(args.requests, args.concurrency, one)

            creds = Credentials(s3.access_key, s3.secret_key)
            signer = SigV4Auth(creds, "s3", "us-west-2")
            conn = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(connector=conn) as http:

                async def signed(i):
                    req = AWSRequest(method="GET", url=f"{url}/micro/{keys[i % len(keys)]}")
                    req.context["timestamp"] = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
                    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
                    signer.add_auth(req)
                    async with http.get(req.url, headers=dict(req.headers.items())) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"GET {r.status}: {await r.text()}")

                await _drive(200, args.concurrency, signed)
                results["aiohttp + botocore SigV4Auth"] = await _drive(args.requests, args.concurrency, signed)

                async def unsigned(i):
                    async with http.get(f"{url}/micro/{keys[i % len(keys)]}") as r:
                        await r.read()

                results["aiohttp, unsigned (floor; 403s)"] = await _drive(args.requests, args.concurrency, unsigned)
            print(f"client CPU per GET of a 2 KB object, {args.requests} requests, concurrency {args.concurrency}:")
            for name, us in results.items():
                print(f"  {us:8.0f} µs  {name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--objects", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=64)
    asyncio.run(main_async(p.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
