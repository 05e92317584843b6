"""Typed COCO Camera Traps records, as Animl and LILA export them.

Only the fields sci_fetch relies on are declared; everything else is kept (``extra="allow"``) so a
record written back out (``sci-fetch filter``) loses nothing.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, field_validator, model_validator
from pydantic_core import core_schema

from sci_fetch.coco.guard import LEFT_OUT

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


class _NoControlChars:
    """A string with no control character (NUL, newline, ...): never legitimate in a key or a path, it breaks
    logs and CSVs. Checked by pydantic-core (a Rust regex after the type and length checks), not by a Python
    call per field and record; the refusal reads as a field validator's ``ValueError`` would."""

    _CHECK = core_schema.custom_error_schema(
        core_schema.str_schema(pattern=r"^[^\x00-\x1f]*$"),
        custom_error_type="control_character",
        custom_error_message="Value error, contains a control character (NUL, newline, ...)",
    )

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.chain_schema([handler(source), self._CHECK])


class _Record(BaseModel):
    """What every COCO record shares: unknown fields kept, numbers as strings, no string of megabytes."""

    model_config = _RECORD

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        return _nothing_left_out(data)


class CocoImage(_Record):
    """One ``images[]`` entry; ``id`` may be an int in some LILA sets, so numbers become strings."""

    id: Annotated[str, Field(min_length=1, max_length=MAX_ID), _NoControlChars()]
    file_name: Annotated[str, Field(min_length=1, max_length=MAX_PATH), _NoControlChars()]
    serving_bucket_key: Annotated[str, Field(max_length=MAX_KEY), _NoControlChars()] | None = None
    original_file_name: str | None = Field(None, max_length=MAX_PATH)
    datetime: str | None = Field(None, max_length=MAX_TEXT)
    location: str | None = Field(None, max_length=MAX_TEXT)
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)


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
