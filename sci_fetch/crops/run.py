"""Orchestrate a crop run: join the COCO file, hand images to the process pool, write both CSVs.

Results are taken back in submission order from a bounded queue of in-flight chunks, so the CSVs
come out in COCO order (images, then annotation index) while memory stays flat: at most
``4 × workers`` chunks are decoded or waiting at any time.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sci_fetch.coco.source import read_categories
from sci_fetch.crops.boxes import Geometry, Reject, coco_box
from sci_fetch.crops.cropper import BoxJob, BoxResult, ImageJob, WorkerParams, crop_chunk
from sci_fetch.crops.decode import resolve
from sci_fetch.crops.join import Ann, Joined, annotated_file_names, group_annotations, join
from sci_fetch.crops.labels import Labels, build_labels
from sci_fetch.crops.naming import crop_base, crop_relpath, extension_clashes, flat_key
from sci_fetch.crops.options import CropOptions
from sci_fetch.crops.reasons import FILTER_REASONS, Reason
from sci_fetch.crops.resize import Resize
from sci_fetch.crops.table import CropRow, RejectRow, box_cells
from sci_fetch.errors import InputError, RecordError, SciFetchError, UsageError
from sci_fetch.exits import ExitCode
from sci_fetch.fs.csv_out import FORMULA_STARTS, CsvWriter
from sci_fetch.fs.layout import manifests_in
from sci_fetch.keys.mapping import UnsafePathError, Variant, safe_relative_path
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.units import format_duration

T = TypeVar("T")
MAX_CHUNK = 16  # images decoded per pool task
MAX_BATCH = 256  # image entries per queue slot, with or without work
SHOW_ESCAPED = 10  # labels named in the summary's spreadsheet line, at most

Progress = Callable[[int, int], None]  # (images done, images total), called as results come in


@dataclass
class CropSummary:
    crops_csv: Path
    rejects_csv: Path
    images: int = 0  # images that have at least one annotation
    boxes: int = 0  # annotations in the COCO file
    written: int = 0  # crops made this run
    kept: int = 0  # crops already there and right
    remade: int = 0  # crops there but stale, truncated or foreign, made again
    clipped: int = 0  # boxes that stuck out of the image and were cut to it
    rejected: Counter[str] = field(default_factory=Counter)  # reason code -> boxes
    seconds: float = 0.0
    escaped_labels: list[str] = field(default_factory=list)  # labels written with a leading ' (fs.csv_out)

    @property
    def crops(self) -> int:
        return self.written + self.kept + self.remade

    @property
    def problems(self) -> int:
        """Boxes with no crop for a reason other than the user's own filters."""
        return sum(n for reason, n in self.rejected.items() if reason not in FILTER_REASONS)

    @property
    def exit_code(self) -> int:
        return ExitCode.INCOMPLETE if self.problems else ExitCode.OK

    def lines(self) -> list[str]:
        out = [
            f"crops: {self.crops} of {self.boxes} boxes on {self.images} images "
            f"({self.written} made, {self.kept} already there, {self.remade} remade; {self.clipped} clipped to the image) "
            f"in {format_duration(self.seconds)}"
        ]
        if self.rejected:
            out.append(f"no crop for {sum(self.rejected.values())} boxes:")
            for reason, n in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
                kind = "filtered" if reason in FILTER_REASONS else "problem"
                out.append(f"  {reason:<20} {n:>8}  ({kind})")
        if self.escaped_labels:
            out.append(self._escaped_line())
        out.append(f"crop CSV:    {self.crops_csv}")
        out.append(f"rejects CSV: {self.rejects_csv}")
        return out

    def _escaped_line(self) -> str:
        """One line naming the labels a spreadsheet would have run as formulas, so nobody wonders about the '."""
        starts = ", ".join(repr(c)[1:-1] for c in FORMULA_STARTS)
        shown = ", ".join(repr(label) for label in self.escaped_labels[:SHOW_ESCAPED])
        more = len(self.escaped_labels) - SHOW_ESCAPED
        tail = f" and {more} more" if more > 0 else ""
        return (
            f"labels starting with {starts} are written with a leading ' so spreadsheets show them as text: "
            f"{shown}{tail}"
        )


class _InlineExecutor(Executor):
    """workers=1: no pool, no pickling, plain tracebacks; same interface as the pool."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(exc)
        return fut


def _executor(workers: int) -> Executor:
    if workers == 1:
        return _InlineExecutor()
    # Workers start from a small server process that has imported only the cropper (Pillow, the box
    # math), not as forks of this one: a fork would carry pandas and the joined annotations into every
    # worker's resident memory. A fork server is also safe when other threads run (after `download`).
    if "forkserver" in multiprocessing.get_all_start_methods():
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(["sci_fetch.crops.cropper"])
        return ProcessPoolExecutor(max_workers=workers, mp_context=forkserver)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


@dataclass(slots=True)
class _Entry:
    """One image id's boxes on their way through the pool, with what the main process decided."""

    joined: Joined
    source: str
    early: dict[int, Reject]  # annotation index -> why no crop, decided without opening the file
    labels: dict[int, str]
    crop_paths: dict[int, str]
    job: ImageJob | None = None


def manifest_paths(images_dir: Path, manifest: Path | None) -> list[Path]:
    """The manifest given, else every manifest a download left in ``images_dir``: the plain one and
    one per shard (``manifest-shard-K-of-N.sqlite``), so crops after a sharded download see every image."""
    return [manifest] if manifest is not None else manifests_in(images_dir)


def _manifest_states(images_dir: Path, manifest: Path | None) -> dict[str, str | None] | None:
    """image id -> md5 of the downloaded file for done rows ('' when the row has none), None for rows
    not done yet; None when there is no manifest (then only the file's presence counts).

    A row done in any manifest wins: the same image may be pending in an older shard layout's manifest.
    """
    paths = manifest_paths(images_dir, manifest)
    if not paths:
        return None
    states: dict[str, str | None] = {}
    for path in paths:
        store = Manifest(path, readonly=True)
        try:
            for row in store.rows():
                if row.state is State.done:
                    states[row.image_id] = row.md5 or ""
                else:
                    states.setdefault(row.image_id, None)
        finally:
            store.close()
    return states


class _Planner:
    """Main-process decisions per image: the ones that need no pixels (labels, nulls, paths, manifest)."""

    def __init__(
        self,
        options: CropOptions,
        images_dir: Path,
        labels: Labels,
        categories: dict[int, str],
        states: dict[str, str | None] | None,
        clashes: set[str] | None = None,
    ) -> None:
        self.options = options
        self.images_dir = images_dir
        self.labels = labels
        self.categories = categories
        self.states = states
        self.flat_owner: dict[str, str] = {}
        self.clashes = clashes or set()  # nested crop bases two file names share: those keep their extension

    def _box_verdict(self, ann: Ann) -> tuple[str, Reject | None]:
        name = self.categories.get(ann.category_id)
        if name is None:
            return "", Reject(Reason.unknown_category, f"category_id {ann.category_id} is not in the COCO categories")
        label, reason = self.labels.verdict(name)
        if reason is Reason.excluded_category:
            return label, Reject(reason, f"category '{name}' is excluded")
        if reason is Reason.not_kept:
            return label, Reject(reason, f"label '{label}' is not in the keep-list")
        threshold = self.options.min_confidence
        if threshold is not None and ann.confidence is not None and ann.confidence < threshold:
            return label, Reject(Reason.low_confidence, f"confidence {ann.confidence:g} is below {threshold:g}")
        box = coco_box(ann.bbox)
        return label, box if isinstance(box, Reject) else None

    def _image_problem(self, joined: Joined) -> Reject | None:
        image = joined.image
        if image is None:
            reason, detail = joined.problem or (Reason.unknown_image, "")
            return Reject(reason, detail)
        try:
            safe_relative_path(image.file_name)
        except UnsafePathError as exc:
            return Reject(Reason.unsafe_path, f"file_name {image.file_name!r}: {exc}")
        if self.options.naming == "flat":
            owner = self.flat_owner.setdefault(flat_key(image.file_name), image.id)
            if owner != image.id:
                return Reject(Reason.name_collision, f"flat naming: image {owner!r} has the same file stem")
        if self.states is not None and image.id in self.states and self.states[image.id] is None:
            return Reject(Reason.not_downloaded, "the manifest has not recorded this image as downloaded yet")
        return None

    def plan(self, joined: Joined) -> _Entry:
        image = joined.image
        source = str(self.images_dir / image.file_name) if image is not None else ""
        entry = _Entry(joined, source, {}, {}, {})
        problem = self._image_problem(joined)
        jobs: list[BoxJob] = []
        for ann in joined.boxes:
            label, reject = self._box_verdict(ann)
            entry.labels[ann.index] = label
            # The box's own verdict (filtered, null, unknown category) wins over its image's problem:
            # downloading the image would not give a null box a crop.
            reject = reject or problem
            if reject is not None:
                entry.early[ann.index] = reject
                continue
            assert image is not None
            path = str(self.options.crops_dir / self._relpath(image.file_name, ann.index))
            entry.crop_paths[ann.index] = path
            jobs.append(BoxJob(ann.index, ann.bbox, path))
        if jobs:
            assert image is not None
            md5 = self.states.get(image.id) if self.states is not None else None
            absent = Reason.missing_file if md5 is not None or self.states is None else Reason.not_downloaded
            entry.job = ImageJob(source, (image.width, image.height), tuple(jobs), absent, md5 or None)
        return entry

    def _relpath(self, file_name: str, index: int) -> str:
        naming = self.options.naming
        clash = naming == "nested" and crop_base(file_name) in self.clashes
        return crop_relpath(file_name, index, naming, keep_extension=clash)


class _Writer:
    """Turns finished entries into typed CSV rows and counts."""

    def __init__(self, crops: CsvWriter, rejects: CsvWriter, summary: CropSummary, categories: dict[int, str]) -> None:
        self.crops = crops
        self.rejects = rejects
        self.summary = summary
        self.categories = categories

    def entry(self, entry: _Entry, results: list[BoxResult]) -> None:
        by_index = {r.index: r for r in results}
        for ann in entry.joined.boxes:
            early = entry.early.get(ann.index)
            result = by_index.get(ann.index)
            if early is None and result is not None and result.outcome != "rejected":
                self._crop(entry, ann, result)
            elif early is not None:
                self._box_reject(entry, ann, early.reason, early.detail)
            else:
                assert result is not None and result.reason is not None
                self._box_reject(entry, ann, result.reason, result.detail)

    def _crop(self, entry: _Entry, ann: Ann, result: BoxResult) -> None:
        image = entry.joined.image
        assert image is not None
        self.summary.clipped += result.clipped
        if result.outcome == "new":
            self.summary.written += 1
        elif result.outcome == "kept":
            self.summary.kept += 1
        else:
            self.summary.remade += 1
        left = top = width = height = None
        if result.rect is not None:
            left, top, right, bottom = result.rect
            width, height = right - left, bottom - top
        x, y, w, h = box_cells(ann.bbox)
        self.crops.add(
            CropRow(
                entry.crop_paths[ann.index], entry.labels.get(ann.index, ""), image.id, ann.id, ann.category_id,
                entry.source, x, y, w, h, result.width, result.height, image.location, image.datetime,
                left, top, width, height,
            )
        )  # fmt: skip

    def _box_reject(self, entry: _Entry, ann: Ann, reason: Reason, detail: str) -> None:
        x, y, w, h = box_cells(ann.bbox)
        category = self.categories.get(ann.category_id, "")
        label = entry.labels.get(ann.index, "")
        self.reject(
            RejectRow(
                entry.joined.image_id, ann.id, ann.category_id, category, label, entry.source, x, y, w, h,
                reason.value, detail,
            )
        )  # fmt: skip

    def reject(self, row: RejectRow) -> None:
        self.summary.rejected[row.reason] += 1
        self.rejects.add(row)

    def invalid(self, err: RecordError) -> None:
        """An annotation record that did not validate: a row of its own, no image or box to name."""
        none = (None, None, None, None)
        self.reject(
            RejectRow("", err.record_id or "", None, "", "", "", *none, Reason.invalid_annotation.value, str(err))
        )


def _chunks(entries: Iterator[_Entry], size: int) -> Iterator[list[_Entry]]:
    """Groups of entries carrying at most ``size`` images to decode; entries with nothing to decode
    (all boxes filtered or not downloaded) ride along, up to a cap so they never pile up."""
    batch: list[_Entry] = []
    jobs = 0
    for entry in entries:
        batch.append(entry)
        jobs += entry.job is not None
        if jobs >= size or len(batch) >= MAX_BATCH:
            yield batch
            batch, jobs = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class _Run:
    """What one crop run works from, checked before any crop is written."""

    coco: Path
    images_dir: Path
    options: CropOptions
    csv_path: Path
    rejects_path: Path


def _checked(coco: Path, images_dir: Path, options: CropOptions) -> _Run:
    """UsageError/InputError for inputs that cannot work, before anything is written."""
    if not coco.is_file():
        raise InputError(f"COCO file {coco} does not exist")
    if not images_dir.is_dir():
        raise UsageError(f"images dir {images_dir} does not exist; give the folder `download` wrote to")
    csv_path, rejects_path = options.csv_path(), options.rejects_path()
    if csv_path.resolve() == rejects_path.resolve():
        raise UsageError(f"the crop CSV and the rejects CSV are the same file {csv_path}")
    return _Run(coco, images_dir, options, csv_path, rejects_path)


def _worker_params(options: CropOptions) -> WorkerParams:
    variant = options.variant or Variant.original
    resize = Resize(options.max_size, options.size) if options.max_size or options.size else None
    return WorkerParams(
        Geometry(options.padding, options.square, options.min_size),
        options.jpeg_quality,
        variant is Variant.original,
        options.recheck,
        resize,
        resolve(options.decoder),
    )


class _Pool:
    """The process pool and the bounded queue of chunks in flight, drained in submission order."""

    def __init__(self, options: CropOptions, writer: _Writer, progress: Progress | None, images_total: int) -> None:
        self.params = _worker_params(options)
        self.max_inflight = 4 * options.workers
        self.workers = options.workers
        self.writer = writer
        self.progress = progress
        self.images_total = images_total
        self.images_done = 0
        self.inflight: deque[tuple[Future[list[list[BoxResult]]] | None, list[_Entry]]] = deque()

    def run(self, batches: Iterator[list[_Entry]]) -> None:
        executor = _executor(self.workers)
        try:
            for batch in batches:
                jobs = [e.job for e in batch if e.job is not None]
                self.inflight.append((executor.submit(crop_chunk, jobs, self.params) if jobs else None, batch))
                while len(self.inflight) > self.max_inflight:
                    self._drain_one()
            while self.inflight:
                self._drain_one()
        except BrokenProcessPool as exc:
            executor.shutdown(wait=True, cancel_futures=True)
            raise SciFetchError(
                "a crop worker process died (out of memory? try fewer --workers); "
                "crops made so far are kept and the same command resumes"
            ) from exc
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)

    def _drain_one(self) -> None:
        future, batch = self.inflight.popleft()
        results = iter(future.result() if future is not None else [])
        for entry in batch:
            self.writer.entry(entry, next(results) if entry.job is not None else [])
            self.images_done += entry.joined.image is not None
        if self.progress is not None:
            self.progress(self.images_done, self.images_total)


def run_crops(
    coco: Path,
    images_dir: Path,
    options: CropOptions,
    manifest: Path | None = None,
    progress: Progress | None = None,
) -> CropSummary:
    """Crop every labelled box of ``coco`` from the images under ``images_dir`` and write both CSVs.

    ``manifest``: the download's manifest; default every manifest in ``<images_dir>/.sci-fetch/`` (see
    files.layout). ``progress(images_done, images_total)`` is called as results come in. Raises
    UsageError/InputError before any crop is written when an option or the COCO file is unusable,
    DiskError when the disk is.
    """
    started = time.monotonic()
    run = _checked(coco, images_dir, options)
    labels = build_labels(options.label_map, options.exclude, options.keep)
    categories = {c.id: c.name for c in read_categories(coco)}
    groups = group_annotations(coco)
    summary = CropSummary(run.csv_path, run.rejects_path, boxes=groups.total)
    clashes = extension_clashes(annotated_file_names(coco, groups.by_image)) if options.naming == "nested" else set()
    planner = _Planner(options, images_dir, labels, categories, _manifest_states(images_dir, manifest), clashes)
    images_total = len(groups.by_image)  # image ids with boxes (a few may turn out to have no record)
    chunk = max(1, min(MAX_CHUNK, images_total // (options.workers * 4)))
    with (
        CsvWriter(run.csv_path, CropRow, track=["species_label"]) as crops_sink,
        CsvWriter(run.rejects_path, RejectRow, track=["species_label", "category"]) as rejects_sink,
    ):
        writer = _Writer(crops_sink, rejects_sink, summary, categories)
        pool = _Pool(options, writer, progress, images_total)
        pool.run(_chunks((planner.plan(j) for j in join(coco, groups)), chunk))
        summary.images = pool.images_done
        for err in groups.invalid:
            writer.invalid(err)
        crops_sink.commit()
        rejects_sink.commit()
    summary.escaped_labels = sorted(set[str]().union(*crops_sink.escaped.values(), *rejects_sink.escaped.values()))
    summary.seconds = time.monotonic() - started
    return summary
