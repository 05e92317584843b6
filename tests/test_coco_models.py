"""CocoImage's checks moved from Python field validators into pydantic-core (issue 20: a cheaper record path);
this pins that it accepts and refuses exactly what the Python validators did, with the same messages."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError, field_validator

from sci_fetch.coco.models import LEFT_OUT, MAX_ID, MAX_KEY, MAX_PATH, MAX_TEXT, CocoImage, _Record

_CONTROL = re.compile(r"[\x00-\x1f]")


class PythonCheckedImage(_Record):
    """CocoImage as it was (main 78a3d05): the control-character check as a Python field validator."""

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
        if value is not None and _CONTROL.search(value):
            raise ValueError("contains a control character (NUL, newline, ...)")
        return value


def verdict(model: type[_Record], raw: Any) -> tuple[Any, ...]:
    """What a record reads as (its fields, extras, which were set) or the (place, message) of each problem."""
    try:
        item = model.model_validate(raw)
    except ValidationError as exc:
        return ("refused", [(err["loc"], err["msg"]) for err in exc.errors()])
    return ("read", item.model_dump(), item.model_fields_set, item.model_extra)


_STRINGS = st.one_of(
    st.text(max_size=8),
    st.text(alphabet="ab:/\x00\n\x1f\x7fé ", max_size=8),
    st.sampled_from(["", LEFT_OUT, "x" * MAX_ID, "x" * (MAX_ID + 1), "é" * MAX_PATH, "\n" * (MAX_PATH + 1)]),
    st.builds(lambda a, b: a + b, st.sampled_from(["x" * (MAX_KEY - 1), "y" * 1023]), st.sampled_from(["", "a", "\n"])),
)
_VALUES = st.one_of(
    _STRINGS,
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
)
_KEYS = st.sampled_from(
    ["id", "file_name", "serving_bucket_key", "original_file_name", "datetime", "location", "width", "height"]
    + ["extra", LEFT_OUT]
)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=10))
def test_pydantic_core_checks_say_what_the_python_validators_said(raw):
    assert verdict(CocoImage, raw) == verdict(PythonCheckedImage, raw)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=6), st.text(max_size=6), st.one_of(st.none(), st.text(max_size=6)))
def test_usual_records_read_the_same(image_id, file_name, key):
    raw = {"id": image_id, "file_name": file_name, "serving_bucket_key": key, "width": 4, "kept": {"a": [1]}}
    assert verdict(CocoImage, raw) == verdict(PythonCheckedImage, raw)


def test_a_control_character_is_named_per_field_as_before():
    raw = {"id": "p:\n1", "file_name": "a\x00.jpg", "serving_bucket_key": "k\x1f"}
    assert verdict(CocoImage, raw) == (
        "refused",
        [
            ((field,), "Value error, contains a control character (NUL, newline, ...)")
            for field in ("id", "file_name", "serving_bucket_key")
        ],
    )
