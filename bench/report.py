"""Targets (met / not met), the markdown report and the PNG chart, all from the results dict."""

from __future__ import annotations

from pathlib import Path

TOOL_ORDER = ["sci_fetch", "sci_fetch_1proc", "sci_fetch_nofsync", "sci_fetch_2proc", "s5cmd", "rclone", "crt", "animl"]
REGIME_TITLES = {
    "loopback": "plain loopback (CPU-bound)",
    "latency": "+{ms} ms per request (latency-bound)",
    "https": "HTTPS, loopback",
    "https_latency": "HTTPS + {ms} ms (the headline: S3 across a WAN)",
}
RESUME_FULL = 110_320


def _t(name: str, value, op: str, threshold, note: str = "") -> dict:
    if value is None:
        met = None
    elif op == ">=":
        met = value >= threshold
    elif op == "<=":
        met = value <= threshold
    elif op == "<":
        met = value < threshold
    else:
        met = value == threshold
    return {"target": name, "measured": value, "op": op, "threshold": threshold, "met": met, "note": note}


def _compat(results: dict) -> dict:
    """Results written by earlier versions of the benchmark, in today's shape."""
    memory = results.get("memory")
    if memory and "runs" not in memory and "sci_fetch" in memory:  # one every-key-missing pass
        run = dict(memory["sci_fetch"], mode="missing", images=memory["images"], coco_mb=memory.get("coco_mb", 0))
        results["memory"] = {
            "runs": [run],
            "images": memory["images"],
            "peak_rss_mb": run["peak_rss_mb"],
            **({"animl": dict(memory["animl"], images=memory["images"])} if "animl" in memory else {}),
        }
    prof = results.get("profile")
    if prof and "samples" in prof and "cpu_samples" not in prof:
        prof["cpu_samples"], prof["idle_samples_dropped"] = prof["samples"], 0
    return results


def _throughput_targets(summary: dict) -> list[dict]:
    """The download targets of issue 11 (and the earlier ones still worth printing)."""
    out = []
    sci = {regime: tools.get("sci_fetch") for regime, tools in summary.items()}
    if sci.get("https_latency"):
        out.append(
            _t(
                "HTTPS + latency: sci_fetch objects/s vs the CRT client",
                sci["https_latency"].get("speed_vs_crt"),
                ">=",
                1.0,
                f"vs s5cmd: {_fmt(sci['https_latency'].get('speed_vs_s5cmd'))}",
            )
        )
    lat = sci.get("latency")
    if lat:
        out.append(_t("+latency plain: sci_fetch objects/s vs s5cmd", lat.get("speed_vs_s5cmd"), ">=", 1.2))
        out.append(_t("+latency plain: sci_fetch objects/s vs rclone", lat.get("speed_vs_rclone"), ">=", 1.0))
        out.append(
            _t("+latency plain: sci_fetch objects/s vs the Animl-script method", lat.get("speed_vs_animl"), ">=", 4.0)
        )
    loop = sci.get("loopback")
    if loop:
        out.append(_t("loopback: sci_fetch objects/s vs s5cmd", loop.get("speed_vs_s5cmd"), ">=", 1.0))
        out.append(_t("loopback: sci_fetch objects/s vs the CRT client", loop.get("speed_vs_crt"), ">=", 0.8))
    cpu = {r: s.get("cpu_vs_s5cmd") for r, s in sci.items() if s and s.get("cpu_vs_s5cmd") is not None}
    if cpu:
        worst = max(cpu, key=cpu.get)
        out.append(
            _t(
                "CPU s per 1,000 objects vs s5cmd, in every regime (the worst)",
                cpu[worst],
                "<=",
                1.0,
                ", ".join(f"{r} {_fmt(v)}" for r, v in cpu.items()),
            )
        )
    rss = {r: s.get("rss_vs_rclone") for r, s in sci.items() if s and s.get("rss_vs_rclone") is not None}
    if rss:
        worst = max(rss, key=rss.get)
        out.append(
            _t(
                "peak RSS at C=64 vs rclone's, in every regime (the worst)",
                rss[worst],
                "<=",
                1.0,
                ", ".join(f"{r} {_fmt(v)}" for r, v in rss.items()),
            )
        )
    if any(sci.values()):
        ok = all(s["all_verified"] for s in sci.values() if s)
        out.append(_t("sci_fetch files byte-identical (MD5 verified) in every run", ok, "==", True))
    return out


def _resume_targets(resume: dict) -> list[dict]:
    sci = resume["tools"]["sci_fetch"]
    unfinished = [name for name, r in resume["tools"].items() if r["first_run"]["verified"] != resume["objects"]]
    warn = f"; NOT a finished job for {', '.join(unfinished)}: see the first-run figures" if unfinished else ""
    out = [
        _t(
            "resume: S3 requests of a second run over a finished job",
            sci["requests_seen_by_relay"],
            "==",
            0,
            f"{resume['objects']:,} objects; sci_fetch itself reports {sci['requests_reported_by_tool']}{warn}",
        )
    ]
    if resume["objects"] >= RESUME_FULL:
        out.append(_t(f"resume: seconds for {RESUME_FULL:,} images (measured)", sci["again_wall_s"], "<", 3.0))
    else:  # the target is measured at that size only; a smaller job's estimate is a note, not a verdict
        out.append(
            _t(
                f"resume: seconds for {RESUME_FULL:,} images (measured)",
                None,
                "<",
                3.0,
                f"not measured at that size (run --resume-full): {sci['again_wall_s']} s for "
                f"{resume['objects']:,}, which would extrapolate to {resume.get('sci_fetch_estimate_110320_s')} s",
            )
        )
    return out


def targets(results: dict) -> list[dict]:
    results = _compat(results)
    out = _throughput_targets(results.get("throughput", {}).get("summary", {}))
    resume = results.get("resume")
    if resume:
        out += _resume_targets(resume)
    memory = results.get("memory")
    if memory:
        parts = [f"{r['mode']} {r['images']:,}: {r['peak_rss_mb']:.0f} MB" for r in memory["runs"]]
        note = "; ".join(parts) + ("" if memory["images"] >= 1_000_000 else "; NOT at 1,000,000 images")
        out.append(_t("memory: peak RSS (MB) streaming a 1,000,000-image COCO", memory["peak_rss_mb"], "<", 250, note))
    crops = results.get("crops")
    if crops:
        note = f"decoder {crops.get('decoder')}; same images and boxes, seed method run before and after"
        out.append(_t("crops: full-size crops/s vs the seed method", crops.get("crops_per_s_ratio"), ">=", 3.0, note))
        if "max224_crops_per_s_ratio" in crops:
            out.append(
                _t(
                    "crops: --max-size 224 crops/s vs the seed method",
                    crops.get("max224_crops_per_s_ratio"),
                    ">=",
                    6.0,
                    note,
                )
            )
        if "peak_rss_mb" in crops:
            out.append(
                _t(
                    "crops: peak RSS (MB) of the crop run",
                    max(crops["peak_rss_mb"], crops.get("peak_rss_mb_20mp", 0)),
                    "<=",
                    336,
                    f"2-5 MP: {crops['peak_rss_mb']:.0f} MB; 20 MP originals: {crops.get('peak_rss_mb_20mp', 0):.0f} MB",
                )
            )
        out.append(
            _t(
                "crops: scaling slope (log time / log annotations), 1 = linear",
                crops.get("scaling_slope_sci_fetch"),
                "<=",
                1.2,
                f"seed method: {crops.get('scaling_slope_seed')}",
            )
        )
    return out


def _crop_rows(crops: dict, header: bool = True) -> list[str]:
    """One table row per crop run: the sci_fetch runs (bench/crops.py SCI_RUNS) and the seed method."""
    named = [
        ("sci_fetch (every box, process pool)", "sci_fetch"),
        ("sci_fetch --decoder pillow", "sci_fetch_pillow"),
        ("sci_fetch --max-size 224", "sci_fetch_max224"),
        ("sci_fetch --max-size 224 --decoder pillow", "sci_fetch_max224_pillow"),
        ("seed method (first box, linear scan, threads)", "seed_method"),
    ]
    rows = []
    if header:
        rows += [
            "| method | crops | wall s | crops/s | × seed | images/s | CPU s | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for name, key in named:
        r = crops.get(key)
        if r:
            rows.append(
                f"| {name} | {_fmt(r['crops'])} | {_fmt(r['wall_s'])} | {_fmt(r['crops_per_s'], 1)} | {_fmt(r.get('x_seed'))} | "
                f"{_fmt(r['images_per_s'], 1)} | {_fmt(r['cpu_s'])} | {_fmt(r['peak_rss_mb'], 0)} |"
            )
    return rows


def _fmt(v, nd=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _met(t: dict) -> str:
    return "n/a (not measured)" if t["met"] is None else ("met" if t["met"] else "NOT MET")


def _tools_sorted(tools) -> list[str]:
    return sorted(tools, key=lambda t: TOOL_ORDER.index(t) if t in TOOL_ORDER else 99)


def _wire(s: dict) -> str:
    """Requests per object (plain HTTP), or client turns and connections per object (TLS relay)."""
    if s.get("requests_per_object") is not None:
        return _fmt(s["requests_per_object"])
    if s.get("turns_per_object") is not None:
        return f"{_fmt(s['turns_per_object'])} t / {_fmt(s.get('connections_per_object'))} c"
    return "–"


def throughput_table(summary: dict, latency_ms: int) -> list[str]:
    lines = []
    for regime, tools in summary.items():
        lines.append(f"#### {REGIME_TITLES.get(regime, regime).format(ms=latency_ms)}")
        lines.append("")
        lines.append(
            "| tool | wall s | objects/s | MB/s | CPU s / 1k obj | objects / CPU s | peak RSS MB | × s5cmd obj/s | "
            "× CRT obj/s | × s5cmd CPU | × rclone RSS | server CPU s / 1k | proxy CPU s / 1k | requests / object | "
            "byte-identical |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for tool in _tools_sorted(tools):
            s = tools[tool]
            lines.append(
                f"| {tool} | {_fmt(s['wall_s'])} | {_fmt(s['objects_per_s'], 1)} | {_fmt(s['mb_per_s'], 1)} | "
                f"{_fmt(s['cpu_s_per_1000'])} | {_fmt(s.get('objects_per_cpu_s'), 0)} | {_fmt(s['peak_rss_mb'], 0)} | "
                f"{_fmt(s.get('speed_vs_s5cmd'))} | {_fmt(s.get('speed_vs_crt'))} | {_fmt(s.get('cpu_vs_s5cmd'))} | "
                f"{_fmt(s.get('rss_vs_rclone'))} | {_fmt(s['server_cpu_s_per_1000'])} | {_fmt(s['proxy_cpu_s_per_1000'])} | "
                f"{_wire(s)} | {_fmt(s['all_verified'])} |"
            )
        lines.append("")
    return lines


def markdown(results: dict) -> str:
    results = _compat(results)
    meta = results["meta"]
    tp = results.get("throughput")
    lines = [f"# sci_fetch benchmark, {meta['date']}{' (quick)' if meta.get('quick') else ''}", ""]
    lines.append(
        f"Machine: {meta['cpus']} CPUs ({meta.get('cpu_model', '?')}), {meta.get('mem_gb', '?')} GB RAM. "
        f"Tools: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}. "
        f"sci_fetch at {meta.get('git', '?')}."
    )
    lines.append(f"Command: `{meta['command']}`")
    if "sci_fetch_has_processes" in meta:
        lines.append("")
        lines.append(
            "sci_fetch has `--processes`: "
            + (
                "yes (`sci_fetch` runs at its default process count, `sci_fetch_1proc` with `--processes 1`)."
                if meta["sci_fetch_has_processes"]
                else "no (`sci_fetch` is one process; "
                "`sci_fetch_2proc`, two `--shard` processes with C/2 each, stands in for the multi-process engine)."
            )
        )
    if "botocore_crt" in meta:
        lines.append("")
        lines.append(
            f"botocore's use of awscrt (installed for the CRT peer) in sci_fetch and the Animl method: {meta['botocore_crt']}."
        )
    lines.append("")
    if tp:
        d = tp["dataset"]
        lines.append("## Download throughput")
        lines.append("")
        lines.append(
            f"{d['objects']:,} objects ({d['variant']} keys), {d['bytes'] / 1e6:,.0f} MB, median "
            f"{d['median_bytes'] / 1e3:,.0f} KB (min {d['min_bytes'] / 1e3:,.0f} KB, max {d['max_bytes'] / 1e6:.1f} MB); "
            f"concurrency {tp['concurrency']} for all tools (the Animl method uses its own min(50, N^(1/3)) threads); "
            f"medians of {tp['rounds']} rounds with the tool order rotated; ratios are medians of per-round ratios. "
            f"CPU = user + sys of the tool's whole process tree; the server's and the proxy's CPU are shown apart "
            f"and are in no tool's figure. objects / CPU s = 1000 ÷ CPU s per 1k: what decides a many-core "
            f"machine far from the server. Over HTTPS every tool trusts only the run's throw-away CA; the "
            f"HTTPS + latency relay adds the latency per client turn (a request, or a TLS handshake flight) "
            f"and counts turns (t) and connections (c) per object instead of requests."
            + (
                f" Latency proxy for plain HTTP: {tp['proxy'].get('latency', tp['proxy'].get('kind'))}."
                if tp.get("proxy")
                else ""
            )
        )
        lines.append("")
        lines += throughput_table(tp["summary"], int(round(1000 * (tp.get("proxy") or {}).get("latency_s", 0.04))))
    resume = results.get("resume")
    if resume:
        lines.append("## Resume: a second run over a finished job")
        lines.append("")
        lines.append(
            f"{resume['objects']:,} objects of about {resume['object_bytes'] / 1e3:.0f} KB, all done; "
            "the same command again (s5cmd: `cp -n`; rclone: `copy` with the same flags). Requests counted by a relay in front of the server."
        )
        lines.append("")
        lines.append(
            "| tool | second run s | S3 requests | CPU s | first run s | first run objects/s | first run CPU s / 1k |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for tool, r in resume["tools"].items():
            lines.append(
                f"| {tool} | {_fmt(r['again_wall_s'])} | {_fmt(r['requests_seen_by_relay'])} | {_fmt(r['again_cpu_s'])} | "
                f"{_fmt(r['first_run']['wall_s'])} | {_fmt(r['first_run']['objects_per_s'], 0)} | "
                f"{_fmt(r['first_run']['cpu_s_per_1000'])} |"
            )
        lines.append("")
        model = resume.get("sci_fetch_model")
        if model and resume["objects"] < 110_320:
            lines.append(
                f"sci_fetch estimated for 110,320 images: {_fmt(resume.get('sci_fetch_estimate_110320_s'))} s "
                f"({model['fixed_s']} s fixed + {model['per_image_ms']} ms per image, from the whole job and its "
                f"first tenth: {model['tenth_wall_s']} s for {model['tenth_objects']:,})."
            )
        lines.append("")
    memory = results.get("memory")
    if memory:
        lines.append("## Memory: streaming a large COCO file")
        lines.append("")
        lines.append(
            "| pass | images | COCO MB | peak RSS MB | highest sample (s, MB) | wall s | images/s | manifest MB | RSS over time (s: MB) |"
        )
        lines.append("|---|---:|---:|---:|---|---:|---:|---:|---|")
        for r in memory["runs"]:
            curve = ", ".join(f"{t:.0f}: {mb:.0f}" for t, mb in r["rss_curve_mb"])
            hs = r.get("highest_sample")
            lines.append(
                f"| {r['mode']} | {r['images']:,} | {r['coco_mb']:,.0f} | **{r['peak_rss_mb']:.0f}** | "
                f"{f'{hs[0]:.0f}, {hs[1]:.0f}' if hs else '–'} | {r['wall_s']:,.0f} | {r['images_per_s']:,.0f} | "
                f"{_fmt(r.get('manifest_mb'), 0)} | {curve} |"
            )
        lines.append("")
        lines.append(
            "dry-run: `--dry-run` plans every record and writes every manifest row, no request. "
            "missing: an empty bucket, `--max-attempts 1`, one 404 per image."
        )
        if "animl" in memory:
            a = memory["animl"]
            lines.append(
                f"The Animl-script method on the {a['images']:,}-image file: peak RSS {a['peak_rss_mb']:.0f} MB ({a['note']})."
            )
        lines.append("")
    crops = results.get("crops")
    if crops:
        lines.append("## Crops")
        lines.append("")
        lines.append(
            f"{crops['images']:,} full-size JPEGs (mean {crops['mean_image_mb']} MB), {crops['boxes']:,} boxes."
        )
        lines.append("")
        lines.extend(_crop_rows(crops))
        lines.append("")
        if crops.get("decoder"):
            lines.append(
                f"Default decoder here: {crops['decoder']}. The seed method ran before and after the sci_fetch runs "
                f"(crops/s {crops['seed_method'].get('runs_crops_per_s')}); its figure is their mean. No CPU s for "
                "sci_fetch: its workers are children of a fork server that nobody waits for, so no rusage holds "
                "their CPU; the profile below has CPU ms per crop."
            )
            lines.append("")
        big = crops.get("big_20mp")
        if big:
            lines.append(
                f"{big['images']} 20-megapixel originals (mean {big['mean_image_mb']} MB), {big['boxes']} boxes:"
            )
            lines.append("")
            lines.append("| method | crops | wall s | crops/s | × seed | images/s | CPU s | peak RSS MB |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            lines.extend(_crop_rows(big, header=False))
            lines.append("")
        wp = crops.get("worker_profile") or {}
        if "decode_ms_per_image" in wp:
            d = wp["decode_ms_per_image"]
            lines.append(
                f"Decode CPU ms per image, one process, first {d.get('images')} images (lowest box ends at "
                f"{d.get('mean_lowest_box_bottom_fraction')} of the height on average):"
            )
            lines.append("")
            lines.append(
                "| " + " | ".join(k for k in d if k not in ("images", "mean_lowest_box_bottom_fraction")) + " |"
            )
            lines.append("|" + "---:|" * (len(d) - 2))
            lines.append(
                "| "
                + " | ".join(_fmt(v) for k, v in d.items() if k not in ("images", "mean_lowest_box_bottom_fraction"))
                + " |"
            )
            lines.append("")
            lines.append("Crop worker profile (cProfile, one worker inline), share of its time by area:")
            lines.append("")
            areas = list(wp["runs"][0]["areas_pct"])
            lines.append("| run | ms / crop | " + " | ".join(areas) + " |")
            lines.append("|---|---:|" + "---:|" * len(areas))
            for r in wp["runs"]:
                opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
                lines.append(
                    f"| {opts} | {_fmt(r['ms_per_crop'])} | "
                    + " | ".join(_fmt(r["areas_pct"].get(a), 1) for a in areas)
                    + " |"
                )
            lines.append("")
        lines.append("Scaling with synthetic annotations (no pixels):")
        lines.append("")
        lines.append(
            "| annotations | images | sci_fetch s | sci_fetch µs / annotation | seed method s | seed µs / annotation |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for r in crops["scaling"]:
            est = f" (est. from {r['seed_sampled_images']:,} images)" if r["seed_estimated"] else ""
            lines.append(
                f"| {r['annotations']:,} | {r['images']:,} | {_fmt(r['sci_fetch_s'])} | {_fmt(r.get('sci_fetch_us_per_annotation'), 1)} | "
                f"{_fmt(r['seed_s'])}{est} | {_fmt(r.get('seed_us_per_annotation'), 1)} |"
            )
        lines.append("")
        lines.append(
            f"Log-log slope: sci_fetch {crops.get('scaling_slope_sci_fetch')}, seed method {crops.get('scaling_slope_seed')} "
            "(1 = linear, 2 = quadratic)."
        )
        lines.append("")
    prof = results.get("profile")
    if prof and "areas_pct" in prof:
        cpu_k = (((tp or {}).get("summary") or {}).get("loopback") or {}).get("sci_fetch", {}).get("cpu_s_per_1000")
        lines.append("## Where sci_fetch's CPU goes (py-spy --native, loopback download)")
        lines.append("")
        lines.append(
            f"{prof['cpu_samples']:,} CPU samples at {prof.get('rate_hz')} Hz over {prof['objects']:,} objects "
            f"({prof['idle_samples_dropped']:,} idle samples dropped); by thread: "
            + ", ".join(f"{k} {v}%" for k, v in prof.get("threads_pct", {}).items())
            + (f". ms per object = share × the loopback CPU figure ({cpu_k} s per 1,000 objects)." if cpu_k else ".")
        )
        lines.append("")
        lines.append("| area | % of CPU | of which on the event loop's thread | ms per object |")
        lines.append("|---|---:|---:|---:|")
        on_loop = prof.get("areas_on_loop_pct", {})
        for k, v in prof["areas_pct"].items():
            lines.append(f"| {k} | {v} | {_fmt(on_loop.get(k), 1)} | {_fmt(v / 100 * cpu_k if cpu_k else None)} |")
        lines.append("")
        lines.append(
            "A thread blocked inside a syscall (fsync waiting for the disk, open/rename on a busy file system) "
            "looks busy to py-spy's native mode, so those areas include waiting, not only CPU: the "
            "`sci_fetch_nofsync` rows above give fsync's real cost in CPU and in objects/s."
        )
        lines.append("")
        lines.append("Top frames by self time (innermost Python frame → native function under it):")
        lines.append("")
        lines.append("| % | frame |")
        lines.append("|---:|---|")
        for r in prof["self_top"][:20]:
            lines.append(f"| {r['pct']} | `{r['frame']}` |")
        lines.append("")
        lines.append("sci_fetch functions, inclusive:")
        lines.append("")
        lines.append("| % | function |")
        lines.append("|---:|---|")
        for r in prof.get("sci_fetch_inclusive", [])[:14]:
            lines.append(f"| {r['pct']} | `{r['frame']}` |")
        lines.append("")
    lines.append("## Targets")
    lines.append("")
    lines.append("| target | measured | wanted | result | note |")
    lines.append("|---|---:|---|---|---|")
    for t in results.get("targets", []):
        lines.append(
            f"| {t['target']} | {_fmt(t['measured'])} | {t['op']} {_fmt(t['threshold'])} | {_met(t)} | {t['note']} |"
        )
    lines.append("")
    return "\n".join(lines)


def chart(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tp = results.get("throughput")
    if not tp:
        return False
    summary = tp["summary"]
    regimes = list(summary)
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.5 * len(regimes), 7.5), squeeze=False)
    colors = {
        "sci_fetch": "#2b7bba",
        "sci_fetch_1proc": "#5596cc",
        "sci_fetch_nofsync": "#7fb3dd",
        "sci_fetch_2proc": "#1b4f7a",
        "s5cmd": "#e08a1e",
        "rclone": "#4a9c5d",
        "crt": "#b04a8f",
        "animl": "#a0a0a0",
    }
    ms = int(round(1000 * (tp.get("proxy") or {}).get("latency_s", 0.04)))
    for col, regime in enumerate(regimes):
        tools = _tools_sorted(summary[regime])
        for row, (metric, label) in enumerate(
            (
                ("objects_per_s", "objects / s (higher is better)"),
                ("cpu_s_per_1000", "client CPU s per 1,000 objects (lower is better)"),
            )
        ):
            ax = axes[row][col]
            values = [summary[regime][t][metric] or 0 for t in tools]
            bars = ax.bar(tools, values, color=[colors.get(t, "#888") for t in tools])
            for bar, t in zip(bars, tools, strict=False):
                ratio = summary[regime][t].get("speed_vs_s5cmd" if row == 0 else "cpu_vs_s5cmd")
                text = f"{bar.get_height():.0f}" if row == 0 else f"{bar.get_height():.2f}"
                if ratio is not None and t != "s5cmd":
                    text += f"\n×{ratio:.2f}"
                ax.annotate(
                    text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
                )
            ax.set_ylabel(label, fontsize=8)
            ax.set_ylim(0, max(values + [1]) * 1.25)
            if row == 0:
                ax.set_title(REGIME_TITLES.get(regime, regime).format(ms=ms), fontsize=10)
            ax.tick_params(axis="x", labelsize=8, rotation=15)
    d = tp["dataset"]
    fig.suptitle(
        f"sci_fetch vs s5cmd, rclone, the CRT, Animl method: {d['objects']:,} objects, median {d['median_bytes'] / 1e3:.0f} KB, "
        f"C={tp['concurrency']}, median of {tp['rounds']} rounds ({results['meta']['date']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def console(results: dict) -> str:
    """The short version printed at the end of a run."""
    lines = []
    tp = results.get("throughput")
    if tp:
        ms = int(round(1000 * (tp.get("proxy") or {}).get("latency_s", 0.04)))
        for regime, tools in tp["summary"].items():
            lines.append(REGIME_TITLES.get(regime, regime).format(ms=ms) + ":")
            lines.append(
                f"  {'tool':<17}{'wall s':>8}{'obj/s':>9}{'MB/s':>8}{'CPU s/1k':>10}{'obj/CPUs':>9}{'RSS MB':>8}"
                f"{'x s5cmd':>9}{'x CRT':>7}{'x CPU':>7}  ok"
            )
            for tool in _tools_sorted(tools):
                s = tools[tool]
                lines.append(
                    f"  {tool:<17}{_fmt(s['wall_s']):>8}{_fmt(s['objects_per_s'], 1):>9}{_fmt(s['mb_per_s'], 1):>8}"
                    f"{_fmt(s['cpu_s_per_1000']):>10}{_fmt(s.get('objects_per_cpu_s'), 0):>9}"
                    f"{_fmt(s['peak_rss_mb'], 0):>8}{_fmt(s.get('speed_vs_s5cmd')):>9}{_fmt(s.get('speed_vs_crt')):>7}"
                    f"{_fmt(s.get('cpu_vs_s5cmd')):>7}  {_fmt(s['all_verified'])}"
                )
    lines.append("targets:")
    for t in results.get("targets", []):
        lines.append(
            f"  [{_met(t):^9}] {t['target']}: {_fmt(t['measured'])} (wanted {t['op']} {_fmt(t['threshold'])})"
            + (f"; {t['note']}" if t["note"] else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULTS.json``: rewrite the .md and .png of a finished run, print the summary."""
    import json
    import sys

    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    for path in paths:
        results = json.loads(path.read_text())
        results["targets"] = targets(results)
        path.with_suffix(".md").write_text(markdown(results))
        chart(results, path.with_suffix(".png"))
        print(console(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
