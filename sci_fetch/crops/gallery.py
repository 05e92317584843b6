"""One static HTML page of the crops, per label: what people do in a notebook before training, done once.

The page sits in the crops folder (``crops/gallery.html``) and links every thumbnail by a relative path
inside it, so the folder can be zipped and shared and still opens anywhere. The crop CSV is streamed
(csv module, flat memory): per label a count and a fixed-seed random pick of up to N crops, so the
page shows a spread of cameras rather than the first N rows. Every string from the data (labels, paths,
locations, reasons) is escaped: they come from user files.
"""

from __future__ import annotations

import csv
import html
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from urllib.parse import quote

from sci_fetch.crops.options import DEFAULT_CSV_NAME, DEFAULT_REJECTS_NAME
from sci_fetch.crops.reasons import FILTER_REASONS
from sci_fetch.errors import DiskError, InputError, UsageError
from sci_fetch.fs.atomic import write_atomic
from sci_fetch.fs.csv_out import read_cell
from sci_fetch.fs.layout import manifest_path
from sci_fetch.observe.units import human_bytes

GALLERY_NAME = "gallery.html"
PER_LABEL = 24


@dataclass
class LabelGroup:
    label: str
    count: int = 0
    picks: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (row number, row)


@dataclass
class Thumb:
    href: str  # relative to the page, URL-quoted
    title: str
    caption: str


@dataclass
class GalleryData:
    crops: int
    images: int
    labels: list[LabelGroup]
    thumbs: dict[str, list[Thumb]]
    absent: int  # picked crops whose file is not on disk
    rejects: Counter[str]
    downloads: dict[str, int] | None


def _rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a CSV sci_fetch wrote, each cell as it was before the spreadsheet rule (fs.csv_out)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield {k: read_cell(v) if isinstance(v, str) else v for k, v in row.items()}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc


def read_crops(path: Path, per_label: int, seed: int = 0) -> tuple[list[LabelGroup], int, int]:
    """Labels by count (most first) with a fixed-seed reservoir of ``per_label`` rows each; crops; images."""
    rng = random.Random(seed)
    groups: dict[str, LabelGroup] = {}
    images: set[str] = set()
    total = 0
    for number, row in enumerate(_rows(path)):
        if "image_path" not in row or "species_label" not in row:
            raise InputError(f"{path}: not a crop CSV (no image_path / species_label columns)")
        total += 1
        images.add(row.get("image_id") or row.get("source_path") or "")
        group = groups.setdefault(row["species_label"], LabelGroup(row["species_label"]))
        group.count += 1
        if len(group.picks) < per_label:
            group.picks.append((number, row))
        else:
            slot = rng.randrange(group.count)
            if slot < per_label:
                group.picks[slot] = (number, row)
    for group in groups.values():
        group.picks.sort(key=lambda pick: pick[0])
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.label))
    return ordered, total, len(images)


def read_rejects(path: Path) -> Counter[str]:
    return Counter(row.get("reason") or "unknown" for row in _rows(path)) if path.is_file() else Counter()


def find_crop(image_path: str, crops_dir: Path) -> Path | None:
    """The crop file a CSV row names: as written (relative to where crops ran), or its tail under ``crops_dir``."""
    path = Path(image_path)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    parts = PurePath(image_path).parts
    candidates += [
        crops_dir / PurePath(*parts[k:]) for k in range(len(parts)) if not PurePath(*parts[k:]).is_absolute()
    ]
    return next((c for c in candidates if c.is_file()), None)


def _thumb(row: dict[str, str], crops_dir: Path, page_dir: Path) -> Thumb | None:
    found = find_crop(row["image_path"], crops_dir)
    if found is None:
        return None
    rel = Path(os.path.relpath(found.resolve(), page_dir.resolve())).as_posix()
    size = f"{row.get('crop_width', '')}×{row.get('crop_height', '')}".strip("×")
    where = " · ".join(v for v in (row.get("location"), row.get("datetime")) if v)
    caption = " · ".join(v for v in (size, row.get("location")) if v)
    return Thumb(quote(rel, safe="/"), f"{row['image_path']}\n{where}".strip(), caption)


def _downloads(images_dir: Path | None, manifest: Path | None) -> dict[str, int] | None:
    """Counts per state from the download's manifest, when there is one."""
    from sci_fetch.manifest.store import Manifest

    path = manifest or (manifest_path(images_dir) if images_dir else None)
    if path is None or not path.is_file():
        return None
    store = Manifest(path, readonly=True)
    try:
        counts = dict(store.counts())
        counts["bytes"] = store.bytes_done()
        return counts
    finally:
        store.close()


@dataclass(frozen=True)
class GalleryOptions:
    """What ``write_gallery`` reads and writes besides the crops folder; unset paths default inside it.

    ``images_dir`` / ``manifest``: the download's, for its figures on the page (left out when absent).
    """

    csv_path: Path | None = None
    rejects_path: Path | None = None
    dest: Path | None = None
    per_label: int = PER_LABEL
    images_dir: Path | None = None
    manifest: Path | None = None
    title: str = "Crops per label"


@dataclass(frozen=True)
class _Paths:
    """GalleryOptions' files with their defaults filled in."""

    crops_dir: Path
    csv: Path
    rejects: Path
    page: Path


def _paths(crops_dir: Path, options: GalleryOptions) -> _Paths:
    return _Paths(
        crops_dir,
        options.csv_path or crops_dir / DEFAULT_CSV_NAME,
        options.rejects_path or crops_dir / DEFAULT_REJECTS_NAME,
        options.dest or crops_dir / GALLERY_NAME,
    )


def collect(paths: _Paths, options: GalleryOptions) -> GalleryData:
    if not paths.csv.is_file():
        raise UsageError(f"no crop CSV at {paths.csv}; run `sci-fetch crops` first (or give --csv)")
    labels, crops, images = read_crops(paths.csv, options.per_label)
    thumbs: dict[str, list[Thumb]] = {}
    absent = 0
    for group in labels:
        made = [_thumb(row, paths.crops_dir, paths.page.parent) for _n, row in group.picks]
        absent += sum(t is None for t in made)
        thumbs[group.label] = [t for t in made if t is not None]
    downloads = _downloads(options.images_dir, options.manifest)
    return GalleryData(crops, images, labels, thumbs, absent, read_rejects(paths.rejects), downloads)


_CSS = """
:root { --bg:#f6f7f4; --card:#fff; --ink:#1d2a1f; --muted:#5f6b61; --accent:#2f6b3c; --line:#dde3dc; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg); color:var(--ink); }
header { background:var(--accent); color:#fff; padding:20px 28px; }
header h1 { margin:0 0 4px; font-size:24px; }
header p { margin:0; opacity:.85; }
main { padding:8px 28px 40px; max-width:1500px; margin:0 auto; }
h2 { font-size:19px; margin:28px 0 10px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h2 .count { color:var(--muted); font-weight:normal; font-size:15px; margin-left:8px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:10px; margin:0; }
.cards div { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.cards dt { color:var(--muted); font-size:13px; }
.cards dd { margin:2px 0 0; font-size:22px; font-weight:600; }
nav { display:flex; flex-wrap:wrap; gap:6px; margin:16px 0 4px; }
nav a { background:var(--card); border:1px solid var(--line); border-radius:14px; padding:3px 11px; color:var(--ink); text-decoration:none; }
nav a:hover { border-color:var(--accent); }
nav span { color:var(--muted); margin-left:4px; }
table { border-collapse:collapse; background:var(--card); min-width:360px; }
th, td { border:1px solid var(--line); padding:5px 12px; text-align:left; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(150px,1fr)); gap:10px; }
figure { margin:0; background:var(--card); border:1px solid var(--line); border-radius:6px; overflow:hidden; }
figure img { display:block; width:100%; height:150px; object-fit:contain; background:#222; }
figcaption { font-size:12px; color:var(--muted); padding:3px 7px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.note { color:var(--muted); margin:0 0 8px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _figures(data: GalleryData) -> str:
    problems = sum(n for r, n in data.rejects.items() if r not in {x.value for x in FILTER_REASONS})
    cards: list[tuple[str, int | str]] = [
        ("crops", data.crops),
        ("labels", len(data.labels)),
        ("images with crops", data.images),
        ("boxes without a crop", sum(data.rejects.values())),
        ("of those, problems", problems),
    ]
    if data.downloads is not None:
        cards += [
            ("images downloaded", data.downloads.get("done", 0)),
            ("images failed or missing", data.downloads.get("failed", 0) + data.downloads.get("missing", 0)),
            ("bytes downloaded", human_bytes(data.downloads.get("bytes", 0))),
        ]
    if data.absent:
        cards.append(("picked crops not on disk", data.absent))
    items = "".join(
        f"<div><dt>{_e(k)}</dt><dd>{_e(f'{v:,}' if isinstance(v, int) else v)}</dd></div>" for k, v in cards
    )
    return f'<section><h2>The run</h2><dl class="cards">{items}</dl></section>'


def _rejects(data: GalleryData) -> str:
    if not data.rejects:
        return '<section><h2>Boxes without a crop</h2><p class="note">none</p></section>'
    filtered = {x.value for x in FILTER_REASONS}
    rows = "".join(
        f'<tr><td>{_e(reason)}</td><td class="n">{n:,}</td><td>{"left out by the options" if reason in filtered else "problem"}</td></tr>'
        for reason, n in sorted(data.rejects.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return (
        "<section><h2>Boxes without a crop</h2><table><thead><tr><th>reason</th><th>boxes</th><th>kind</th></tr></thead>"
        f'<tbody>{rows}</tbody></table><p class="note">Every box is listed with its reason in {_e(DEFAULT_REJECTS_NAME)}.</p></section>'
    )


def _label(index: int, group: LabelGroup, thumbs: list[Thumb]) -> str:
    name = group.label or "(no label)"
    figures = "".join(
        f'<figure><a href="{_e(t.href)}"><img src="{_e(t.href)}" loading="lazy" alt="{_e(name)}" title="{_e(t.title)}"></a>'
        f"<figcaption>{_e(t.caption)}</figcaption></figure>"
        for t in thumbs
    )
    shown = (
        f"showing {len(thumbs)} of {group.count:,}, picked at random"
        if len(thumbs) < group.count
        else f"all {group.count:,}"
    )
    return (
        f'<section id="label-{index}"><h2>{_e(name)}<span class="count">{group.count:,} crops</span></h2>'
        f'<p class="note">{shown}</p><div class="grid">{figures}</div></section>'
    )


def render(data: GalleryData, title: str, source: str) -> str:
    """The whole page as one string; no external CSS, script or font."""
    nav = "".join(
        f'<a href="#label-{i}">{_e(g.label or "(no label)")}<span>{g.count:,}</span></a>'
        for i, g in enumerate(data.labels)
    )
    sections = "".join(_label(i, g, data.thumbs[g.label]) for i, g in enumerate(data.labels))
    when = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{data.crops:,} crops in {len(data.labels):,} labels, from {_e(source)}, "
        f"written by sci-fetch gallery on {_e(when)}</p></header><main>"
        f"{_figures(data)}<nav>{nav}</nav>{_rejects(data)}{sections}</main></body></html>\n"
    )


def write_gallery(crops_dir: Path, options: GalleryOptions | None = None) -> Path:
    """Write ``<crops_dir>/gallery.html`` (or ``options.dest``) from the crop CSVs; returns its path.

    Raises UsageError when there is no crop CSV, InputError when it is unreadable, DiskError when the page
    cannot be written.
    """
    options = options or GalleryOptions()
    if options.per_label < 0:
        raise UsageError("per_label must be 0 or more")
    paths = _paths(Path(crops_dir), options)
    page = render(collect(paths, options), options.title, paths.csv.name)
    try:
        write_atomic(paths.page, page)
    except OSError as exc:
        raise DiskError(f"cannot write {paths.page}: {exc.strerror or exc}") from exc
    return paths.page
