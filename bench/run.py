"""``python -m bench``: sci_fetch against s5cmd, rclone, the AWS CRT S3 client and the Animl-script
method, in one run.

Makes a throw-away CA and server certificate, starts SeaweedFS on loopback (plain and HTTPS S3
ports), seeds the objects, runs every part asked for, prints the figures and
the targets, and writes ``bench/results/<date>[-quick].json``, ``.md`` and ``.png``.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import data, report
from bench.throughput import REGIMES
from bench.tls import SeaweedS3Https, make_certs
from bench.tools import Target, binary, clean_env, make_tools, sci_fetch_has_processes, sci_fetch_wants_crt

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PARTS = ["throughput", "resume", "memory", "crops"]

QUICK = {
    "objects": 300,
    "rounds": 3,
    "resume_objects": 2000,
    "memory_images": 20_000,
    "memory_missing_images": 5000,
    "crop_images": 200,
    "crop_scaling": "2000,5000,10000",
    "scan_sample": 1000,
}
# memory_missing_images: one 404 per image (~500/s here), so 1,000,000 would take ~35 min; pass it explicitly.
FULL = {
    "objects": 2000,
    "rounds": 3,
    "resume_objects": 20_000,
    "memory_images": 1_000_000,
    "memory_missing_images": 100_000,
    "crop_images": 2000,
    "crop_scaling": "10000,30000,100000",
    "scan_sample": 3000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a ~12 minute smoke run: 300 objects, small side benchmarks")
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all), or scale (minutes per million images; "
        "python -m bench.scale runs it alone), or download_scale (a download of --scale-sizes images from a fast "
        "local server, and a crashed job's first GET from SeaweedFS; python -m bench.download_scale runs it alone)",
    )
    p.add_argument("--objects", type=int, help="objects per download run (default 2000; quick 300)")
    p.add_argument("--small", action="store_true", help="~100 KB objects under medium/ keys (Animl's medium variant)")
    p.add_argument("--concurrency", type=int, default=64, help="C for every tool (default 64)")
    p.add_argument("--rounds", type=int, help="rounds per regime, tool order rotated each round (default 3)")
    p.add_argument(
        "--regimes",
        default=",".join(REGIMES),
        help=f"comma-separated subset of {','.join(REGIMES)} (default all; https_latency is the headline)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=0.04,
        help="seconds added to every request (HTTPS: every client turn) in the latency regimes (default 0.04)",
    )
    p.add_argument(
        "--proxy",
        choices=["auto", "fault", "relay"],
        default="auto",
        help="latency proxy: tests/fault_proxy.py (fault), bench/relay.py (relay), or fault if present (auto)",
    )
    p.add_argument(
        "--tools",
        default="sci_fetch,sci_fetch_1proc,s5cmd,rclone,crt,animl",
        help="tools to compare (sci_fetch_1proc = --processes 1, or sci_fetch_2proc when sci_fetch has no "
        "--processes; also: sci_fetch_nofsync = sci_fetch --no-fsync; sci_fetch_2proc = two sci_fetch "
        "processes with --shard 0/2 and 1/2, C/2 each)",
    )
    p.add_argument(
        "--resume-objects",
        type=int,
        help="objects of the finished job for the resume test (default 20000; 110320 = SCI)",
    )
    p.add_argument(
        "--resume-full", action="store_true", help="resume test with 110,320 objects, the size of the SCI export"
    )
    p.add_argument(
        "--memory-images",
        type=int,
        help="images of the memory test's --dry-run pass (default 1000000, about 5 min; quick 20000)",
    )
    p.add_argument(
        "--memory-missing-images",
        type=int,
        help="images of the memory test's every-key-missing pass, one "
        "404 each (default 100000, about 4 min; 1000000 takes about 35 min; quick 5000; 0 skips it)",
    )
    p.add_argument("--crop-images", type=int, help="full-size images for crops/s (default 2000; quick 200)")
    p.add_argument("--crop-scaling", help="annotation counts for the scaling test (default 10000,30000,100000)")
    p.add_argument(
        "--scan-sample", type=int, help="time the seed crop method on this many sampled images when there are more"
    )
    p.add_argument(
        "--profile", action="store_true", help="also run sci_fetch once under py-spy and report where its CPU goes"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed for object sizes and bytes")
    p.add_argument(
        "--scale-sizes",
        default="110320,330000,1000000",
        help="image counts of the scale part's jobs (default: 110320,330000,1000000)",
    )
    p.add_argument(
        "--workdir", type=Path, help="scratch folder (default: a new one under $TMPDIR); removed unless --keep"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, COCO files, SeaweedFS data)")
    p.add_argument(
        "--results", type=Path, default=HERE / "results", help="where the .json/.md/.png go (default bench/results)"
    )
    p.add_argument("--tag", default="", help="suffix for the result file names")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.resume_full:
        args.resume_objects = 110_320
    args.parts = [x for x in args.parts.split(",") if x]
    args.regimes = [x for x in args.regimes.split(",") if x]
    if [x for x in args.regimes if x not in REGIMES]:
        p.error(f"unknown regime(s) {[x for x in args.regimes if x not in REGIMES]}; known: {','.join(REGIMES)}")
    args.crop_scaling = [int(x) for x in str(args.crop_scaling).split(",") if x]
    bad = [x for x in args.parts if x not in PARTS + ["profile", "scale", "download_scale"]]
    if bad:
        p.error(f"unknown part(s) {bad}")
    if "profile" in args.parts:
        args.profile = True
        args.parts.remove("profile")
    return args


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        return out[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def meta(args: argparse.Namespace, argv: list[str]) -> dict:
    info = {
        "date": dt.date.today().isoformat(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in argv),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gb"] = round(int(line.split()[1]) / 1e6, 1)
    except OSError:
        pass
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "sci_fetch"], capture_output=True, text=True
    ).stdout.strip()
    info["git"] = git + (" + uncommitted changes in sci_fetch/" if dirty else "")
    info["versions"] = {
        "sci_fetch": _version([sys.executable, "-m", "sci_fetch", "--version"]).replace("sci-fetch ", ""),
        "s5cmd": _optional_version("s5cmd", "version"),  # only the download parts need them
        "rclone": _optional_version("rclone", "version").replace("rclone ", ""),
        "weed": _version([binary("weed"), "version"]).replace("version ", "")[:40],
    }
    import boto3

    info["versions"]["boto3 (Animl method)"] = boto3.__version__
    try:
        from importlib.metadata import version

        info["versions"]["awscrt"] = version("awscrt")
    except Exception:  # noqa: BLE001 - informative only
        info["versions"]["awscrt"] = "?"
    info["sci_fetch_has_processes"] = sci_fetch_has_processes()
    info["botocore_crt"] = (
        "on (sci_fetch depends on awscrt)" if sci_fetch_wants_crt() else "off (BOTO_DISABLE_CRT=true)"
    )
    return info


def _optional_version(name: str, *args: str) -> str:
    try:
        return _version([binary(name), *args])
    except RuntimeError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {text}", flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sci-fetch-bench-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "meta": meta(args, argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    say(f"workdir {workdir}; parts {','.join(args.parts)}{' + profile' if args.profile else ''}")
    certs = make_certs(workdir / "tls")
    server = SeaweedS3Https(workdir / "seaweed", buckets=["bench-data", "bench-resume", "bench-empty"], certs=certs)
    try:
        server.start()
        say(f"SeaweedFS on {server.endpoint_url} and {server.https_url} (pid {server.pid}); throw-away CA {certs.ca}")
        dataset = None
        coco = workdir / "coco.json"
        if "throughput" in args.parts or args.profile:
            t0 = time.perf_counter()
            dataset = data.make_dataset(args.objects, args.seed, small=args.small)
            data.seed_bucket(server, "bench-data", dataset)
            data.write_coco(coco, dataset.objects)
            say(
                f"seeded {len(dataset.objects):,} objects, {dataset.total_bytes / 1e6:,.0f} MB "
                f"(median {dataset.median_size / 1e3:.0f} KB) in {time.perf_counter() - t0:.0f} s"
            )

        def part(name: str, fn) -> None:
            """Run one part; a failure is recorded and the next part still runs."""
            try:
                results[name] = fn()
            except Exception as exc:  # noqa: BLE001 - reported, and the other parts' figures are kept
                say(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
                results.setdefault("errors", {})[name] = traceback.format_exc()

        if "throughput" in args.parts:
            from bench.throughput import run_throughput

            part(
                "throughput",
                lambda: run_throughput(
                    s3=server,
                    bucket="bench-data",
                    dataset=dataset,
                    coco=coco,
                    tools=make_tools(args.tools.split(",")),
                    regimes=args.regimes,
                    rounds=args.rounds,
                    concurrency=args.concurrency,
                    latency=args.latency,
                    proxy_kind=args.proxy,
                    workdir=workdir,
                    say=say,
                    ca=certs.ca,
                ),
            )
        if args.profile:
            from bench.profile import run_profile

            part(
                "profile",
                lambda: run_profile(
                    s3=server,
                    bucket="bench-data",
                    dataset=dataset,
                    coco=coco,
                    concurrency=args.concurrency,
                    workdir=workdir,
                    say=say,
                ),
            )
        if "resume" in args.parts:
            from bench.resume import run_resume

            def resume() -> dict:
                t0 = time.perf_counter()
                rset = data.make_dataset(args.resume_objects, args.seed + 1, fixed_size=2000)
                data.seed_bucket(server, "bench-resume", rset, workers=32)
                rcoco = data.write_coco(workdir / "resume-coco.json", rset.objects)
                say(f"[resume] seeded {len(rset.objects):,} objects in {time.perf_counter() - t0:.0f} s")
                return run_resume(
                    s3=server,
                    bucket="bench-resume",
                    dataset=rset,
                    coco=rcoco,
                    concurrency=args.concurrency,
                    repeats=3,
                    workdir=workdir,
                    say=say,
                )

            part("resume", resume)
        if "memory" in args.parts:
            from bench.memory import run_memory

            part(
                "memory",
                lambda: run_memory(
                    s3=server,
                    bucket="bench-empty",
                    n_images=args.memory_images,
                    n_missing=args.memory_missing_images,
                    concurrency=args.concurrency,
                    workdir=workdir,
                    say=say,
                ),
            )
        if "scale" in args.parts:
            from bench.scale import run_scale

            part("scale", lambda: run_scale(args.scale_sizes, workdir / "scale"))
        if "download_scale" in args.parts:
            from bench.download_scale import run_all

            part("download_scale", lambda: run_all(args.scale_sizes, workdir / "download_scale"))
        if "crops" in args.parts:
            from bench.crops import run_crops_bench

            env = clean_env(Target(server.endpoint_url, "none", server.access_key, server.secret_key))
            part(
                "crops",
                lambda: run_crops_bench(
                    n_images=args.crop_images,
                    scaling=args.crop_scaling,
                    scan_sample=args.scan_sample,
                    workdir=workdir,
                    say=say,
                    env=env,
                    big_count=8 if args.quick else 40,
                ),
            )
    finally:
        server.stop()
        results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
        results["targets"] = report.targets(results)
        args.results.mkdir(parents=True, exist_ok=True)
        stem = results["meta"]["date"] + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
        if not args.quick:  # a full run never replaces an earlier one of the same day: -2, -3, ...
            base, n = stem, 2
            while (args.results / f"{stem}.json").exists():
                stem, n = f"{base}-{n}", n + 1
        json_path = args.results / f"{stem}.json"
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        png = args.results / f"{stem}.png"
        drew = False
        try:  # the JSON is written already: a reporting bug must not lose the measurements
            (args.results / f"{stem}.md").write_text(report.markdown(results))
            drew = report.chart(results, png)
            print()
            print(report.console(results))
        except Exception as exc:  # noqa: BLE001
            print(
                f"reporting failed ({type(exc).__name__}: {exc}); the measurements are in {json_path}; "
                f"redo the tables with: python -m bench.report {json_path}"
            )
        print(f"\nwrote {json_path}, {json_path.with_suffix('.md')}" + (f", {png}" if drew else ""))
        if results.get("errors"):
            print(f"parts that failed (tracebacks in the JSON): {', '.join(results['errors'])}")
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
