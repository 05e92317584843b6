"""``sci-fetch filter``: the SCI subset of a full Animl export, as a valid COCO file.

Drops annotations of excluded categories (default empty, person, vehicle, animal), then images left
without an annotation (Animl exports only human-validated labels, so such an image was either not
reviewed or holds only excluded labels), and the excluded categories themselves. Ids are kept as
they are, so the subset joins back to the full export.

Records are written back exactly as read (same keys, same value types: ``bbox`` stays integers),
each validated with the COCO models on the way; a record that does not validate is dropped and
reported. Three streaming passes (annotations, images, annotations again) keep memory to the set of
kept image ids. Top-level ``info`` and ``licenses`` are carried over; other top-level keys are not.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson

from sci_fetch.coco import source as coco_source
from sci_fetch.coco.models import CocoAnnotation, CocoCategory, CocoImage
from sci_fetch.crops.labels import norm
from sci_fetch.errors import DiskError, InputError, RecordError, UsageError
from sci_fetch.exits import ExitCode
from sci_fetch.fs.atomic import AtomicFile

DEFAULT_EXCLUDE = ("empty", "person", "vehicle", "animal")
CARRIED_KEYS = ("info", "licenses")


def _carried(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in CARRIED_KEYS:
        try:
            with open(path, "rb") as fh:
                value = next(ijson.items(fh, key, use_float=True), None)
        except ijson.JSONError as exc:
            raise InputError(f"{path}: broken JSON ({exc})") from exc
        if value is not None:
            out[key] = value
    return out


@dataclass
class FilterSummary:
    source: Path
    dest: Path
    exclude: list[str]
    categories: list[CocoCategory] = field(default_factory=list)
    excluded_ids: set[int] = field(default_factory=set)
    unmatched_exclude: list[str] = field(default_factory=list)
    images_before: int = 0
    images_after: int = 0
    annotations_before: int = 0
    annotations_after: int = 0
    before: Counter[int] = field(default_factory=Counter)  # category id -> annotations
    after: Counter[int] = field(default_factory=Counter)
    unknown_category: int = 0  # annotations whose category_id is not in categories: dropped
    orphans: int = 0  # kept annotations whose image record is missing or invalid: dropped
    invalid: list[RecordError] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when records were dropped for being broken rather than by the filter."""
        return ExitCode.INCOMPLETE if self.invalid or self.unknown_category or self.orphans else ExitCode.OK

    def lines(self, show_invalid: int = 5) -> list[str]:
        width = max([len(c.name) for c in self.categories] + [8])
        out = [f"{'id':>4}  {'category':<{width}}  {'before':>8}  {'after':>8}"]
        for c in self.categories:
            mark = "  (excluded)" if c.id in self.excluded_ids else ""
            out.append(f"{c.id:>4}  {c.name:<{width}}  {self.before[c.id]:>8}  {self.after[c.id]:>8}{mark}")
        out.append(f"{'':>4}  {'total':<{width}}  {self.annotations_before:>8}  {self.annotations_after:>8}")
        out.append(
            f"images: {self.images_before} -> {self.images_after}; annotations: {self.annotations_before} -> "
            f"{self.annotations_after}; categories: {len(self.categories)} -> {len(self.categories) - len(self.excluded_ids)}"
        )
        if self.unmatched_exclude:
            out.append(f"note: no category is named {', '.join(repr(e) for e in self.unmatched_exclude)}")
        if self.unknown_category:
            out.append(f"dropped {self.unknown_category} annotations whose category_id is not in 'categories'")
        if self.orphans:
            out.append(f"dropped {self.orphans} annotations whose image record is missing or invalid")
        if self.invalid:
            out.append(f"dropped {len(self.invalid)} invalid records:")
            out.extend(f"  {err}" for err in self.invalid[:show_invalid])
            if len(self.invalid) > show_invalid:
                out.append(f"  ... and {len(self.invalid) - show_invalid} more")
        out.append(f"wrote {self.dest}")
        return out


class _JsonArrayWriter:
    """Writes ``{"key": [record,\\n record, ...], ...}`` one record per line, to a temp file renamed at the end
    (files.atomic); leaving the block without ``commit()`` removes it. Raises OSError."""

    def __init__(self, dest: Path) -> None:
        self.out = AtomicFile(dest, fsync=True)
        self.fh = self.out.fh
        self.fh.write("{")
        self.keys = 0
        self.items = 0

    def value(self, key: str, value: Any) -> None:
        self.fh.write(("," if self.keys else "") + f"\n{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
        self.keys += 1

    def begin(self, key: str) -> None:
        self.fh.write(("," if self.keys else "") + f"\n{json.dumps(key)}: [")
        self.keys += 1
        self.items = 0

    def item(self, record: Any) -> None:
        self.fh.write(("," if self.items else "") + "\n" + json.dumps(record, ensure_ascii=False))
        self.items += 1

    def end(self) -> None:
        self.fh.write("\n]")

    def commit(self) -> None:
        self.fh.write("\n}\n")
        self.out.commit()

    def __enter__(self) -> _JsonArrayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.discard()


Category = tuple[Any, CocoCategory]  # (the record as read, validated)


def _categories(source: Path, exclude: list[str], summary: FilterSummary) -> list[Category]:
    """The categories as read, and which of them ``exclude`` names; a broken one stops the filter."""
    raw_categories = []
    for raw, cat in coco_source.iter_raw(source, "categories", CocoCategory):
        if isinstance(cat, RecordError):
            raise InputError(f"{source}: categories[{cat.index}]: {cat.reason}")
        raw_categories.append((raw, cat))
    summary.categories = [c for _raw, c in raw_categories]
    wanted = {norm(e) for e in exclude}
    summary.excluded_ids = {c.id for c in summary.categories if norm(c.name) in wanted}
    found = {norm(c.name) for c in summary.categories}
    summary.unmatched_exclude = [e for e in exclude if norm(e) not in found]
    return raw_categories


def _images_to_keep(source: Path, known: set[int], summary: FilterSummary) -> set[str]:
    """Pass 1: the ids of images that keep at least one annotation."""
    keep_images: set[str] = set()
    for _raw, ann in coco_source.iter_raw(source, "annotations", CocoAnnotation):
        if isinstance(ann, RecordError):
            summary.invalid.append(ann)
            continue
        summary.annotations_before += 1
        summary.before[ann.category_id] += 1
        if ann.category_id not in known:
            summary.unknown_category += 1
        elif ann.category_id not in summary.excluded_ids:
            keep_images.add(ann.image_id)
    return keep_images


def _write_images(out: _JsonArrayWriter, source: Path, keep_images: set[str], summary: FilterSummary) -> set[str]:
    """Pass 2: the images, in file order, each id once; the ids written."""
    written: set[str] = set()
    out.begin("images")
    for raw, image in coco_source.iter_raw(source, "images", CocoImage):
        if isinstance(image, RecordError):
            summary.invalid.append(image)
            continue
        summary.images_before += 1
        if image.id in keep_images and image.id not in written:
            out.item(raw)
            written.add(image.id)
    out.end()
    summary.images_after = len(written)
    return written


def _write_annotations(
    out: _JsonArrayWriter, source: Path, known: set[int], written: set[str], summary: FilterSummary
) -> None:
    """Pass 3: the annotations of the images written."""
    out.begin("annotations")
    for raw, ann in coco_source.iter_raw(source, "annotations", CocoAnnotation):
        if isinstance(ann, RecordError) or ann.category_id not in known or ann.category_id in summary.excluded_ids:
            continue
        if ann.image_id not in written:
            summary.orphans += 1
            continue
        out.item(raw)
        summary.after[ann.category_id] += 1
        summary.annotations_after += 1
    out.end()


def filter_coco(source: Path, dest: Path, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> FilterSummary:
    if not source.is_file():
        raise InputError(f"COCO file {source} does not exist")
    if dest.exists() and dest.resolve() == source.resolve():
        raise UsageError(f"the output {dest} is the input file; write the subset to another file")
    names = [e for e in exclude if e.strip()]
    summary = FilterSummary(source, dest, names)
    raw_categories = _categories(source, names, summary)
    known = {c.id for c in summary.categories}
    keep_images = _images_to_keep(source, known, summary)
    try:
        with _JsonArrayWriter(dest) as out:
            for key, value in _carried(source).items():
                out.value(key, value)
            written = _write_images(out, source, keep_images, summary)
            _write_annotations(out, source, known, written, summary)
            out.begin("categories")
            for raw, cat in raw_categories:
                if cat.id not in summary.excluded_ids:
                    out.item(raw)
            out.end()
            out.commit()
    except OSError as exc:
        raise DiskError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    return summary
