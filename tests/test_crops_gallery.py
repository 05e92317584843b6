"""The crop gallery: every thumbnail link resolves (also after the folder is copied elsewhere), the counts are
the CSVs' counts, data from user files is escaped, and where Chromium is installed the page renders as more
than a blank screen."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image
from test_crops_helpers import annotation, image_record, put_image, write_coco

from sci_fetch.cli import main
from sci_fetch.crops.gallery import GalleryOptions, write_gallery
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.run import run_crops
from sci_fetch.demo.sample import make_sample
from sci_fetch.errors import UsageError

CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """What a test needs from the page: links, image sources per label section, reject rows, figures."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.sections: list[dict] = []  # {"label": heading text, "images": [src, ...]}, in page order
        self.rejects: dict[str, int] = {}
        self.figures: dict[str, str] = {}
        self._in: dict[str, bool] = {"section": False, "h2": False, "span": False}
        self._cell: list[str] | None = None
        self._row: list[str] = []
        self._dt = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id", "").startswith("label-"):
            self._in["section"] = True
            self.sections.append({"label": "", "images": []})
        if tag in ("h2", "span"):
            self._in[tag] = True
        if tag == "a" and not a["href"].startswith("#"):
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a["src"])
            if self._in["section"]:
                self.sections[-1]["images"].append(a["src"])
        if tag == "tr":
            self._row = []
        if tag in ("td", "dt", "dd"):
            self._cell = []

    def handle_data(self, data):
        if self._in["section"] and self._in["h2"] and not self._in["span"]:
            self.sections[-1]["label"] += data
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in self._in:
            self._in[tag] = False
        text = "".join(self._cell or []).strip()
        if tag == "td":
            self._row.append(text)
        elif tag == "dt":
            self._dt = text
        elif tag == "dd":
            self.figures[self._dt] = text
        elif tag == "tr" and len(self._row) == 3:
            self.rejects[self._row[0]] = int(self._row[1].replace(",", ""))
        if tag in ("td", "dt", "dd"):
            self._cell = None


def heading_counts(page_text: str) -> dict[str, int]:
    """label -> the count its heading shows ("fox<span class="count">24 crops</span>")."""
    import re

    return {
        m.group(1): int(m.group(2).replace(",", ""))
        for m in re.finditer(r'<h2>([^<]*)<span class="count">([\d,]+) crops</span></h2>', page_text)
    }


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo_crops(tmp_path_factory):
    """The demo's sample, its originals on disk as a download leaves them, cropped with the SCI label fixes."""
    root = tmp_path_factory.mktemp("gallery")
    sample = make_sample(root / "sample", n_images=40)
    images = root / "images"
    for record in sample.coco["images"]:
        put_path = images / record["file_name"]
        put_path.parent.mkdir(parents=True, exist_ok=True)
        put_path.write_bytes(sample.objects[record["serving_bucket_key"]])
    options = CropOptions(crops_dir=root / "crops", label_map="sci", workers=1)
    run_crops(sample.coco_path, images, options)
    return root / "crops"


def test_every_link_resolves_and_counts_match_the_csvs(demo_crops):
    page_path = write_gallery(demo_crops, GalleryOptions(per_label=5))
    assert page_path == demo_crops / "gallery.html"
    text = page_path.read_text()
    page = Page(text)
    crops = csv_rows(demo_crops / "crops.csv")
    rejects = csv_rows(demo_crops / "crops_rejected.csv")
    per_label = Counter(r["species_label"] for r in crops)

    assert page.images and set(page.links) == set(page.images)
    for src in page.images:
        assert not src.startswith(("/", "file:", "http")) and ".." not in src, src
        assert (page_path.parent / unquote(src)).is_file(), src
    assert heading_counts(text) == dict(per_label)
    assert [len(s["images"]) for s in page.sections] == [
        min(5, n) for _l, n in sorted(per_label.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    assert page.rejects == dict(Counter(r["reason"] for r in rejects))
    assert page.figures["crops"] == f"{len(crops):,}"
    assert page.figures["labels"] == str(len(per_label))
    assert page.figures["boxes without a crop"] == str(len(rejects))
    assert page.figures["images with crops"] == str(len({r["image_id"] for r in crops}))
    label_of = {Path(r["image_path"]).resolve(): r["species_label"] for r in crops}
    for section in page.sections:  # every thumbnail sits under its own label
        assert {label_of[(page_path.parent / unquote(src)).resolve()] for src in section["images"]} == {
            section["label"]
        }


def test_the_page_still_works_after_the_folder_is_copied_elsewhere(demo_crops, tmp_path):
    write_gallery(demo_crops, GalleryOptions(per_label=3))
    copy = Path(shutil.copytree(demo_crops, tmp_path / "shared" / "crops-copy"))
    page = Page((copy / "gallery.html").read_text())
    assert page.images
    for src in page.images:
        target = (copy / unquote(src)).resolve()
        assert target.is_file() and copy.resolve() in target.parents, src


def test_thumbnails_are_a_stable_random_pick_and_all_when_few(demo_crops):
    first = Page(write_gallery(demo_crops, GalleryOptions(per_label=2)).read_text()).images
    again = Page(write_gallery(demo_crops, GalleryOptions(per_label=2)).read_text()).images
    assert first == again
    everything = Page(write_gallery(demo_crops, GalleryOptions(per_label=10_000)).read_text()).images
    assert len(everything) == len(csv_rows(demo_crops / "crops.csv"))


def test_labels_and_paths_from_user_files_are_escaped(tmp_path):
    images = tmp_path / "images"
    evil_label = '<script>alert("x")</script> & <b>fox</b>'
    record = image_record(1, file_name="site #1/cam 50%/a&b?.png")
    put_image(images, record["file_name"])
    coco = write_coco(
        tmp_path / "coco.json",
        [record],
        [annotation("a1", record, 7, [32, 32, 64, 32])],
        categories=[{"id": 7, "name": evil_label}],
    )
    run_crops(coco, images, CropOptions(crops_dir=tmp_path / "crops", workers=1, exclude=[]))
    page_path = write_gallery(tmp_path / "crops")
    text = page_path.read_text()
    assert "<script>" not in text and "<b>fox</b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;fox&lt;/b&gt;" in text
    page = Page(text)
    assert len(page.images) == 1
    src = page.images[0]
    assert "#" not in src and "?" not in src and " " not in src  # quoted, so a browser does not cut the path
    assert (page_path.parent / unquote(src)).is_file()


def test_crops_run_from_another_folder_still_resolve(tmp_path, monkeypatch):
    """image_path in the CSV is relative to where `crops` ran; the page is written from elsewhere."""
    work = tmp_path / "work"
    images = work / "images"
    record = image_record(2)
    put_image(images, record["file_name"])
    write_coco(work / "coco.json", [record], [annotation("a1", record, 1, [32, 32, 64, 32])])
    monkeypatch.chdir(work)
    run_crops(Path("coco.json"), Path("images"), CropOptions(crops_dir=Path("crops"), workers=1))
    assert csv_rows(work / "crops" / "crops.csv")[0]["image_path"].startswith("crops/")
    monkeypatch.chdir(tmp_path)
    page_path = write_gallery(work / "crops")
    page = Page(page_path.read_text())
    assert len(page.images) == 1 and (page_path.parent / unquote(page.images[0])).is_file()


def test_no_crop_csv_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(UsageError, match="run `sci-fetch crops` first"):
        write_gallery(tmp_path / "nothing")
    assert main(["gallery", "--crops-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "crops.csv" in err


def test_the_command_writes_the_page_and_prints_its_path(demo_crops, capsys):
    assert main(["gallery", "--crops-dir", str(demo_crops), "--per-label", "1"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"gallery: {demo_crops / 'gallery.html'}"
    page = Page((demo_crops / "gallery.html").read_text())
    assert all(len(s["images"]) == 1 for s in page.sections)


@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"{CHROMIUM} is not installed: the screenshot test needs a headless Chromium"
)
def test_a_headless_screenshot_of_the_page_is_not_blank(demo_crops, tmp_path):
    page_path = write_gallery(demo_crops, GalleryOptions(per_label=8))
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            page_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is (nearly) one colour: the page did not render"
