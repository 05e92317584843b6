"""The crop-label CSV and the rejects CSV, written in chunks and put in place atomically.

The standard csv module writes them (quoting as pandas' ``to_csv`` did, so the files are the same):
pandas cost the crop run ~50 MB of resident memory for nothing but this. Rows are appended to a temp file beside the target in chunks (memory stays flat however many
boxes there are) and the temp file is renamed over the target only when the run ends, so a reader
never sees half a CSV and an interrupted run leaves the previous CSV as it was.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from sci_fetch.errors import DiskError

# `image_path` and `species_label` first: the existing notebooks read those two by name and position.
CROP_COLUMNS = (
    "image_path",
    "species_label",
    "image_id",
    "annotation_id",
    "category_id",
    "source_path",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "crop_width",
    "crop_height",
    "location",
    "datetime",
    "source_x",
    "source_y",
    "source_w",
    "source_h",
)
# crop_width/crop_height: the crop file's pixels (after --max-size/--size); source_*: the whole-pixel box
# cut from source_path for it (after padding and --square), which the resize maps onto those pixels.
REJECT_COLUMNS = (
    "image_id",
    "annotation_id",
    "category_id",
    "category",
    "species_label",
    "source_path",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "reason",
    "detail",
)


def number(value: float | None) -> int | float | None:
    """512.0 -> 512: COCO boxes are whole pixels, and '512.0' in a CSV reads as a different value to people."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


class CsvSink:
    """Append rows; ``commit()`` renames into place, leaving the block without it discards them."""

    def __init__(self, path: Path, columns: Sequence[str], chunk_rows: int = 5000) -> None:
        self.path = path
        self.columns = list(columns)
        self.chunk_rows = chunk_rows
        self.rows_written = 0
        self._rows: list[tuple] = []
        self._header = True
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self._tmp, "w", newline="", encoding="utf-8")
        except OSError as exc:
            raise DiskError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._writer = csv.writer(self._fh, lineterminator="\n")

    def add(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._rows and not self._header:
            return
        # None is an empty cell and 512 stays 512 (a float column would write 512.0).
        try:
            if self._header:
                self._writer.writerow(self.columns)
            self._writer.writerows(self._rows)
        except OSError as exc:
            raise DiskError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.rows_written += len(self._rows)
        self._rows.clear()
        self._header = False

    def commit(self) -> None:
        self._flush()
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise DiskError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> CsvSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None or not self._fh.closed:
            self.abort()
