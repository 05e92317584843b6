"""Why a box produced no crop: one short code per cause, as written in the rejects CSV.

Codes are stable strings (users grep and group by them); the free-text ``detail`` column says more.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # Chosen by the user's options: the box is fine, it was left out on purpose.
    excluded_category = "excluded_category"
    not_kept = "not_kept"
    low_confidence = "low_confidence"
    too_small = "too_small"
    # The box itself is unusable.
    null_bbox = "null_bbox"
    negative_size = "negative_size"
    zero_area = "zero_area"
    out_of_bounds = "out_of_bounds"
    cannot_scale = "cannot_scale"
    size_mismatch = "size_mismatch"
    # The COCO records around the box are unusable.
    invalid_annotation = "invalid_annotation"
    invalid_image = "invalid_image"
    unknown_image = "unknown_image"
    unknown_category = "unknown_category"
    unsafe_path = "unsafe_path"
    name_collision = "name_collision"
    # The image file.
    not_downloaded = "not_downloaded"
    missing_file = "missing_file"
    corrupt_image = "corrupt_image"
    write_failed = "write_failed"


# Rejects that follow from options (exclude, keep, min_confidence, min_size): they do not make the
# run "incomplete", so they alone never give exit code 1.
FILTER_REASONS = frozenset({Reason.excluded_category, Reason.not_kept, Reason.low_confidence, Reason.too_small})
