"""Typed COCO Camera Traps records, as Animl and LILA export them.

Only the fields sci_fetch relies on are declared; everything else is kept (``extra="allow"``) so a
record written back out (``sci-fetch filter``) loses nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sci_fetch.coco.guard import LEFT_OUT

_CONTROL = re.compile(r"[\x00-\x1f]")
_RECORD = ConfigDict(extra="allow", coerce_numbers_to_str=True, str_strip_whitespace=False)

# Bounds on every string field, so a hostile record cannot carry megabytes into the manifest and the CSVs.
# In characters (what pydantic counts; a character is 1-4 UTF-8 bytes): keys/mapping checks the bytes a
# file system and S3 count (255 per name part, 4,096 per path, 1,024 per key).
MAX_PATH = 4096  # PATH_MAX on Linux; no file system takes a longer path
MAX_KEY = 1024  # S3's limit on an object key
MAX_ID = 1024
MAX_TEXT = 1024  # location, datetime, category name: short labels


def _nothing_left_out(data: Any) -> Any:
    """A string coco.guard left out (megabytes long) makes its record invalid, naming the field."""
    if isinstance(data, dict) and (LEFT_OUT in data or LEFT_OUT in data.values()):  # C-level: the usual no
        for key, value in data.items():
            if key == LEFT_OUT or value == LEFT_OUT:
                field = "a field name" if key == LEFT_OUT else f"field '{key}'"
                raise ValueError(f"{field} is a string of more than 1 MiB (left out)")
    return data


class _Record(BaseModel):
    """What every COCO record shares: unknown fields kept, numbers as strings, no string of megabytes."""

    model_config = _RECORD

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        return _nothing_left_out(data)


class CocoImage(_Record):
    """One ``images[]`` entry; ``id`` may be an int in some LILA sets, so numbers become strings."""

    id: str = Field(min_length=1, max_length=MAX_ID)
    file_name: str = Field(min_length=1, max_length=MAX_PATH)
    serving_bucket_key: str | None = Field(None, max_length=MAX_KEY)
    original_file_name: str | None = Field(None, max_length=MAX_PATH)
    datetime: str | None = Field(None, max_length=MAX_TEXT)
    location: str | None = Field(None, max_length=MAX_TEXT)
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)

    @field_validator("id", "file_name", "serving_bucket_key")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        # A NUL or newline in a key or path is never legitimate and breaks logs and CSVs.
        if value is not None and _CONTROL.search(value):
            raise ValueError("contains a control character (NUL, newline, ...)")
        return value


class CocoAnnotation(_Record):
    """One ``annotations[]`` entry; ``bbox`` is absolute pixels ``[x, y, w, h]``, values may be null."""

    id: str = Field(max_length=MAX_ID)
    image_id: str = Field(max_length=MAX_ID)
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


class CocoCategory(_Record):
    id: int
    name: str = Field(max_length=MAX_TEXT)
