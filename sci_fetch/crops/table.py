"""The crop-label CSV and the rejects CSV: one typed row per box, its fields the columns.

Written by fs.csv_out (chunks into a temp file renamed at the end of the run, the spreadsheet-formula
rule applied to every text cell); quoting is the csv module's, as pandas' ``to_csv`` wrote them before,
so the files read the same.
"""

from __future__ import annotations

from dataclasses import dataclass

# A box's four numbers: x, y, w, h as COCO gives them (None when the box is null).
Box = tuple[float | None, float | None, float | None, float | None]
NO_BOX: Box = (None, None, None, None)


@dataclass(frozen=True, slots=True)
class CropRow:
    """One crop. ``image_path`` and ``species_label`` first: the notebooks read those two by name and position.

    crop_width/crop_height: the crop file's pixels (after --max-size/--size); source_*: the whole-pixel box
    cut from source_path for it (after padding and --square), which the resize maps onto those pixels.
    """

    image_path: str
    species_label: str
    image_id: str
    annotation_id: str
    category_id: int
    source_path: str
    bbox_x: float | None
    bbox_y: float | None
    bbox_w: float | None
    bbox_h: float | None
    crop_width: int
    crop_height: int
    location: str | None
    datetime: str | None
    source_x: int | None
    source_y: int | None
    source_w: int | None
    source_h: int | None


@dataclass(frozen=True, slots=True)
class RejectRow:
    """One box without a crop, and why."""

    image_id: str
    annotation_id: str
    category_id: int | None
    category: str
    species_label: str
    source_path: str
    bbox_x: float | None
    bbox_y: float | None
    bbox_w: float | None
    bbox_h: float | None
    reason: str
    detail: str


def number(value: float | None) -> float | None:
    """512.0 -> 512: COCO boxes are whole pixels, and '512.0' in a CSV reads as a different value to people."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


def box_cells(bbox: tuple[float | None, ...] | None) -> Box:
    """The four bbox cells of a row; a null or short box leaves the missing ones empty."""
    if bbox is None:
        return NO_BOX
    cells = [number(v) for v in bbox[:4]] + [None] * (4 - len(bbox[:4]))
    return cells[0], cells[1], cells[2], cells[3]
