"""Stream records out of a COCO file without building the whole document in memory.

A million-image export is hundreds of MB of JSON; ``json.load`` would hold all of it as Python
objects. ijson yields one record at a time, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import ijson
from pydantic import BaseModel, ValidationError

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


def _first_line(exc: Exception) -> str:
    """ijson's messages quote the bad input over several lines; one line is enough to find it."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_array(path: Path, name: str) -> None:
    """Fail at once, with one line, when the file is not JSON or has no top-level ``name`` array."""
    try:
        with open(path, "rb") as fh:
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
        raise InputError(f"{path}: not valid JSON ({_first_line(exc)})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    raise InputError(f"{path}: has no '{name}' array; is this a COCO file?")


def iter_raw(path: Path, name: str, model: type[M]) -> Iterator[tuple[Any, M | RecordError]]:
    """Each element of ``name`` as read (to write back unchanged) and validated as ``model`` (to decide on)."""
    _check_array(path, name)
    try:
        with open(path, "rb") as fh:
            for index, raw in enumerate(ijson.items(fh, f"{name}.item", use_float=True)):
                if not isinstance(raw, dict):
                    yield raw, RecordError(index, f"not an object but {type(raw).__name__}", None, name)
                    continue
                try:
                    yield raw, model.model_validate(raw)
                except ValidationError as exc:
                    raw_id = raw.get("id")
                    yield raw, RecordError(index, _describe(exc), str(raw_id) if raw_id is not None else None, name)
    except ijson.JSONError as exc:
        raise InputError(
            f"{path}: broken JSON inside '{name}' ({_first_line(exc)}); the file may be truncated"
        ) from exc
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
