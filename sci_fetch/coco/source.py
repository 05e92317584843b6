"""Stream records out of a COCO file without building the whole document in memory.

A million-image export is hundreds of MB of JSON; ``json.load`` would hold all of it as Python
objects. ijson yields one record at a time, so memory stays flat whatever the file's size; every read
goes through coco.guard, so neither deep nesting nor one endless value can make it grow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import ijson
from pydantic import BaseModel, ValidationError

from sci_fetch.coco.guard import GuardedReader, LongStringFilter, Oversized, Readable
from sci_fetch.coco.models import CocoAnnotation, CocoCategory, CocoImage
from sci_fetch.errors import InputError, RecordError

M = TypeVar("M", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    """One line per problem, naming the field, so a user can find it in the file."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def shorten(value: object, keep: int = 80) -> str:
    """A value for a message or a CSV cell: a field of megabytes is named by its start and its length."""
    text = str(value)
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text):,} characters)"


def _first_line(exc: Exception) -> str:
    """ijson's messages quote the bad input over several lines; one line is enough to find it."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_NOT_JSON_NUMBER = re.compile(r"-?(NaN|Infinity)")


def _not_a_number(exc: Exception) -> str | None:
    """The token yajl stopped at, when it is NaN or Infinity: Python's json and pandas write these for a
    missing or infinite number, but they are not JSON, and "truncated" would send the user looking elsewhere."""
    lines = str(exc).splitlines()
    if len(lines) < 3 or "(right here)" not in lines[2]:
        return None
    caret = len(lines[2].rstrip()) - 1  # yajl points at, or just past, the first character it refused
    found = _NOT_JSON_NUMBER.search(lines[1], max(caret - 2, 0))
    return found.group(0) if found and found.start() <= caret else None


def _broken(path: Path, exc: Exception, inside: str) -> InputError:
    token = _not_a_number(exc)
    if token is not None:
        return InputError(
            f"{path}: {token} in {inside} is not valid JSON (Python's json and pandas write it for a missing "
            "or infinite number); replace it with null or a number"
        )
    return InputError(f"{path}: broken JSON inside {inside} ({_first_line(exc)}); the file may be truncated")


@contextmanager
def _opened(path: Path, filtered: bool) -> Iterator[Readable]:
    with open(path, "rb") as fh:
        yield LongStringFilter(fh) if filtered else fh


@contextmanager
def _guarded(path: Path, filtered: bool = False) -> Iterator[GuardedReader]:
    with _opened(path, filtered) as fh:  # the mirror parser is dropped, not closed: closing it parses an end of file
        yield GuardedReader(fh, path, reopen=partial(_opened, path, filtered))


def _check_array(path: Path, name: str) -> None:
    """Fail at once, with one line, when the file is not JSON or has no top-level ``name`` array."""
    try:
        _find_array(path, name, filtered=False)
    except Oversized:
        _find_array(path, name, filtered=True)


def _find_array(path: Path, name: str, filtered: bool) -> None:
    try:
        with _guarded(path, filtered) as fh:
            depth = 0
            for prefix, event, _value in ijson.parse(fh):
                if event in ("start_map", "start_array"):
                    depth += 1
                    if depth == 1 and event != "start_map":
                        raise InputError(f"{path}: not a COCO file (the top level is not a JSON object)")
                    if depth == 2 and prefix == name:
                        if event != "start_array":
                            raise InputError(f"{path}: '{name}' is not an array")
                        return
                elif event in ("end_map", "end_array"):
                    depth -= 1
                elif depth == 1 and event != "map_key" and prefix == name:
                    raise InputError(f"{path}: '{name}' is not an array")
    except ijson.JSONError as exc:
        token = _not_a_number(exc)
        if token is not None:
            raise _broken(path, exc, "the file") from exc
        raise InputError(f"{path}: not valid JSON ({_first_line(exc)})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    raise InputError(f"{path}: has no '{name}' array; is this a COCO file?")


def iter_raw(path: Path, name: str, model: type[M]) -> Iterator[tuple[Any, M | RecordError]]:
    """Each element of ``name`` as read (to write back unchanged) and validated as ``model`` (to decide on).

    A value of megabytes (Oversized) starts the read again through LongStringFilter, which reads it as
    LEFT_OUT: its record is then one invalid record, and the records before it are not yielded twice."""
    _check_array(path, name)
    yielded = 0
    try:
        for pair in _records(path, name, model, filtered=False):
            yield pair
            yielded += 1
    except Oversized:
        for index, pair in enumerate(_records(path, name, model, filtered=True)):
            if index >= yielded:
                yield pair


def _records(path: Path, name: str, model: type[M], filtered: bool) -> Iterator[tuple[Any, M | RecordError]]:
    validate = model.__pydantic_validator__.validate_python  # model_validate minus its Python wrapper
    try:
        with _guarded(path, filtered) as fh:
            for index, raw in enumerate(ijson.items(fh, f"{name}.item", use_float=True)):
                if not isinstance(raw, dict):
                    yield raw, RecordError(index, f"not an object but {type(raw).__name__}", None, name)
                    continue
                try:
                    yield raw, validate(raw)
                except ValidationError as exc:
                    raw_id = raw.get("id")
                    yield raw, RecordError(index, _describe(exc), shorten(raw_id) if raw_id is not None else None, name)
    except ijson.JSONError as exc:
        raise _broken(path, exc, f"'{name}'") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _stream(path: Path, name: str, model: type[M]) -> Iterator[M | RecordError]:
    return (item for _raw, item in iter_raw(path, name, model))


def iter_images(path: Path) -> Iterator[CocoImage | RecordError]:
    return _stream(path, "images", CocoImage)


def iter_annotations(path: Path) -> Iterator[CocoAnnotation | RecordError]:
    return _stream(path, "annotations", CocoAnnotation)


def read_categories(path: Path) -> list[CocoCategory]:
    """Categories are few; a bad one is an input error, since every label depends on them."""
    out = []
    for item in _stream(path, "categories", CocoCategory):
        if isinstance(item, RecordError):
            raise InputError(f"{path}: categories[{item.index}]: {item.reason}")
        out.append(item)
    return out


def count_images(path: Path, keep: Callable[[str], bool] | None = None) -> int | None:
    """How many records ``images`` holds (those whose id ``keep`` takes: a shard's share), for the ETA and
    so that the counts account for every image; a cheap pass that builds no objects. None when the file
    cannot be read to its end: the stream that reads the records reports why."""
    try:
        return _count(path, keep, filtered=False)
    except Oversized:
        return _count(path, keep, filtered=True)


def _count(path: Path, keep: Callable[[str], bool] | None, filtered: bool) -> int | None:
    try:
        with _guarded(path, filtered) as fh:
            if keep is not None:
                return sum(
                    1
                    for prefix, event, value in ijson.parse(fh)
                    if prefix == "images.item.id" and event in ("string", "number") and keep(str(value))
                )
            return sum(
                1
                for prefix, event, _ in ijson.parse(fh)
                if prefix == "images.item"
                and event in ("start_map", "start_array", "string", "number", "null", "boolean")
            )
    except Oversized:
        if filtered:
            return None
        raise
    except (OSError, ijson.JSONError, InputError):
        return None
