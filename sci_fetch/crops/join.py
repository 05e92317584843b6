"""Join annotations to their images by id in one linear pass over each array.

The old script scanned every annotation for every image (quadratic) and kept the first box only.
Here the annotations are grouped by image id first (one pass), then the images are streamed and each
takes its group out of the dict (one pass), so the work is O(images + annotations).

Memory bound: only the annotations are held, about 250 bytes each (ids, category, 4 numbers); an
Animl export of 110k images and ~150k boxes needs ~40 MB. Images are streamed, never held, which
matters for full exports where most images have no annotation (they were not reviewed).
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ijson

from sci_fetch.coco.models import CocoImage
from sci_fetch.coco.source import iter_annotations, iter_images
from sci_fetch.crops.reasons import Reason
from sci_fetch.errors import RecordError


@dataclass(slots=True)
class Ann:
    """The few fields of an annotation a crop needs."""

    index: int  # position among its image's annotations, in file order: the crop's NN
    id: str
    category_id: int
    bbox: tuple[float | None, ...] | None
    confidence: float | None


@dataclass(slots=True)
class Groups:
    by_image: dict[str, list[Ann]] = field(default_factory=dict)
    invalid: list[RecordError] = field(default_factory=list)
    total: int = 0


@dataclass(slots=True)
class Joined:
    """One image id and its boxes; ``image`` is None when the id has no usable image record."""

    image_id: str
    boxes: list[Ann]
    image: CocoImage | None = None
    problem: tuple[Reason, str] | None = None  # why ``image`` is None: invalid record, or no such image


def group_annotations(coco: Path) -> Groups:
    groups = Groups()
    for item in iter_annotations(coco):
        groups.total += 1
        if isinstance(item, RecordError):
            groups.invalid.append(item)
            continue
        boxes = groups.by_image.setdefault(item.image_id, [])
        bbox = tuple(item.bbox) if item.bbox is not None else None
        boxes.append(Ann(len(boxes), item.id, item.category_id, bbox, item.confidence))
    return groups


def join(coco: Path, groups: Groups) -> Iterator[Joined]:
    """Images with boxes in the order of the ``images`` array, then boxes whose image is unknown.

    Consumes ``groups.by_image``: a repeated image id gets its boxes once, with its first record.
    """
    pending = groups.by_image
    for item in iter_images(coco):
        if isinstance(item, RecordError):
            boxes = pending.pop(item.record_id, None) if item.record_id is not None else None
            if boxes:
                yield Joined(item.record_id or "", boxes, None, (Reason.invalid_image, f"invalid image record {item}"))
            continue
        boxes = pending.pop(item.id, None)
        if boxes:
            yield Joined(item.id, boxes, item)
    for image_id in list(pending):
        yield Joined(
            image_id, pending.pop(image_id), None, (Reason.unknown_image, "no image with this id in the COCO file")
        )


def annotated_file_names(coco: Path, wanted: Container[str]) -> Iterator[str]:
    """The ``file_name`` of every image record whose id has boxes, read raw (the join validates them later).

    A broken file ends this early without an error: the join that follows reports it with its place.
    """
    try:
        with open(coco, "rb") as fh:
            for raw in ijson.items(fh, "images.item", use_float=True):
                if isinstance(raw, dict) and isinstance(raw.get("file_name"), str) and str(raw.get("id")) in wanted:
                    yield raw["file_name"]
    except ijson.JSONError:
        return
