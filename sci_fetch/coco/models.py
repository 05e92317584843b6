"""Typed COCO Camera Traps records, as Animl and LILA export them.

Only the fields sci_fetch relies on are declared; everything else is kept (``extra="allow"``) so a
record written back out (``sci-fetch filter``) loses nothing.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_CONTROL = re.compile(r"[\x00-\x1f]")
_RECORD = ConfigDict(extra="allow", coerce_numbers_to_str=True, str_strip_whitespace=False)


class CocoImage(BaseModel):
    """One ``images[]`` entry; ``id`` may be an int in some LILA sets, so numbers become strings."""

    model_config = _RECORD

    id: str = Field(min_length=1)
    file_name: str = Field(min_length=1)
    serving_bucket_key: str | None = None
    original_file_name: str | None = None
    datetime: str | None = None
    location: str | None = None
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)

    @field_validator("id", "file_name", "serving_bucket_key")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        # A NUL or newline in a key or path is never legitimate and breaks logs and CSVs.
        if value is not None and _CONTROL.search(value):
            raise ValueError("contains a control character (NUL, newline, ...)")
        return value


class CocoAnnotation(BaseModel):
    """One ``annotations[]`` entry; ``bbox`` is absolute pixels ``[x, y, w, h]``, values may be null."""

    model_config = _RECORD

    id: str
    image_id: str
    category_id: int
    bbox: list[float | None] | None = None
    confidence: float | None = None

    @field_validator("bbox")
    @classmethod
    def _four_values(cls, value: list[float | None] | None) -> list[float | None] | None:
        if value is not None and len(value) != 4:
            raise ValueError(f"bbox must have 4 values [x, y, w, h], got {len(value)}")
        if value is not None and any(v is not None and not math.isfinite(v) for v in value):
            raise ValueError("bbox has a non-finite value")
        return value


class CocoCategory(BaseModel):
    model_config = _RECORD

    id: int
    name: str
