"""coco.guard's screen (C-level passes over a chunk's bytes) against its mirror (the event parser it hands
over to): both hand out the same chunks and refuse the same chunk with the same message (issue 20: a
cheaper record path). The hostile files themselves are in test_coco_source.py and test_hostile_coco.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ijson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sci_fetch.coco.guard import BOM, MAX_DEPTH, MAX_VALUE, GuardedReader
from sci_fetch.errors import InputError


class Opener:
    """Opens the file again for the mirror's replay, counting how often it was asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0

    @contextmanager
    def __call__(self) -> Iterator[object]:
        self.calls += 1
        with open(self.path, "rb") as fh:
            yield fh


def read_all(path: Path, size: int, screened: bool, first: int | None = None) -> list[object]:
    """Every chunk the reader hands out (the first of ``first`` bytes when given, then of ``size``), then
    how it ended: ("end",), or the error's type and message."""
    out: list[object] = []
    with open(path, "rb") as fh:
        reader = GuardedReader(fh, path, reopen=Opener(path) if screened else None)
        try:
            while chunk := reader.read(first or size):
                out.append(chunk)
                first = None
            out.append(("end",))
        except (InputError, ijson.JSONError) as exc:
            out.append((type(exc).__name__, str(exc)))
    return out


def same_reads(path: Path, size: int, first: int | None = None) -> None:
    mirror, screen = read_all(path, size, False, first), read_all(path, size, True, first)
    if mirror and isinstance(mirror[-1], tuple) and mirror[-1][0] not in ("end", "InputError", "Oversized"):
        # The mirror met malformed JSON: the screen hands that chunk on and the real parser refuses it.
        assert screen[: len(mirror) - 1] == mirror[:-1]
        return
    assert screen == mirror


# Mostly names without brackets or quotes (what the screen clears by itself), sometimes with them.
_TEXT = st.text(alphabet="ab/é\\ :,", max_size=8) | st.text(alphabet='ab"\\[]{}/é\n :,', max_size=12)


def _deep(n: int) -> object:
    value: object = []
    for _ in range(n):
        value = [value]
    return value


_VALUES = st.recursive(
    st.one_of(_TEXT, st.integers(), st.none(), st.booleans(), st.integers(MAX_DEPTH - 4, MAX_DEPTH + 2).map(_deep)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.dictionaries(_TEXT, _VALUES, max_size=5), max_size=30),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 2, 3, 5, 16, 64, 511, 4096]),
    st.none() | st.integers(1, 300),
)
def test_the_screen_hands_out_and_refuses_what_the_mirror_does(tmp_path, images, ascii_only, bom, size, first):
    path = tmp_path / "coco.json"
    text = json.dumps({"info": {"a": "[{"}, "images": images}, ensure_ascii=ascii_only)
    path.write_bytes((BOM if bom else b"") + text.encode())
    same_reads(path, size, first)


@pytest.mark.parametrize(
    "text",
    [
        '{"images": [' + ", ".join(['{"id": "a\\\\", "n": [[1]]}'] * 3000) + "]}",  # escaped backslashes
        '{"images": [' + ", ".join(['{"id": "\\"[\\"", "n": 1}'] * 3000) + "]}",  # escaped quotes, a bracket
        '{"images": [' + ", ".join(['{"id": "' + "x" * 70_000 + '"}'] * 3) + "]}",  # no bracket in a chunk
        '{"images": [{"id": "a"}, {"x": ' + "[" * 3000 + "]" * 3000 + "}]}",
        '{"images": [{"id": "a"}' + " " * (MAX_VALUE + 70_000) + "]}",
        '{"images": [{"id": "a"}, ' + "[" * 5000,
        '{"images": [{"id": "a"}, {"id": NaN}]}',
        '{"images": [{"c": "]]]]]]"}, {"x": ' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "}]}",  # 65
        '{"images": [{"id": "a"}, {"x": ' + "[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3) + "}]}",  # 64 deep
        '{"images": [{"id": "a"}, {"x": ' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "}]}",  # 65
        '{"images": [' + ", ".join(['{"id": "a"}'] * 9000) + ', {"x": ' + "[" * (MAX_DEPTH - 2) + "]]}]}",
        '{"images": [{"id": "a"}, ' + ", ".join(['{"x": ' + "[" * 60 + "]" * 60 + "}"] * 400) + "]}",
    ],
)
@pytest.mark.parametrize("size", [7, 4096, 65536])
def test_hostile_and_unusual_files_read_the_same_both_ways(tmp_path, text, size):
    path = tmp_path / "coco.json"
    path.write_text(text)
    same_reads(path, size)


def test_a_usual_coco_file_never_wakes_the_mirror(tmp_path):
    """An Animl-shaped file of many chunks is cleared by the screen alone: the file is read once."""
    images = [
        {
            "id": f"proj:{i:032x}",
            "file_name": f"proj/CAM{i % 7}/dep ({i % 3})/proj-{i:032x}.jpg",
            "serving_bucket_key": f"original/proj:{i:032x}-original.jpg",
            "location": 'é \\/ \\u00e9 \\\\ \\" \\\\\\"',
            "original_file_name": f"C:\\DCIM\\{i}.JPG",
            "comment": "[blurry] {x}" if i % 100 == 0 else "",
            "width": 2048,
            "bbox": [1.5, 2, None, 4],
        }
        for i in range(5000)
    ]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 0, "name": "empty"}]}))
    opener = Opener(path)
    with open(path, "rb") as fh:
        reader = GuardedReader(fh, path, reopen=opener)
        read = list(ijson.items(reader, "images.item", use_float=True))
    assert read == json.loads(path.read_text())["images"]
    assert opener.calls == 0


def test_a_refusal_past_the_first_chunks_replays_them_and_names_the_record(tmp_path):
    padding = ", ".join(json.dumps({"id": f"p:{i}", "file_name": f"pad/{i}.jpg" + " " * 60}) for i in range(2000))
    path = tmp_path / "coco.json"
    path.write_text('{"images": [' + padding + ', {"id": "x:1", "deep": ' + "[" * 100 + "]" * 100 + "}]}")
    opener = Opener(path)
    with open(path, "rb") as fh, pytest.raises(InputError) as info:
        list(ijson.items(GuardedReader(fh, path, reopen=opener), "images.item"))
    assert opener.calls == 1
    assert "nested more than 64 levels deep (in images[2000], bytes " in str(info.value)


@pytest.mark.parametrize("payload", ['"', "\\", "u00e9", "n"])
def test_an_escape_cut_by_the_chunk_end_is_followed(tmp_path, payload):
    """The chunk ends on the backslash of an escape inside a string; the next chunk's first byte is what it
    escapes (a quote among them), and a nest past MAX_DEPTH after the string is still seen."""
    head = '{"images": [{"a": "x\\'
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    for after in (f'{payload}", "b": {deep}, "c": "]]"}}]}}', f'{payload}", "b": [[1]]}}]}}'):
        path = tmp_path / "coco.json"
        path.write_text(head + after)
        json.loads(path.read_text())  # the file is valid JSON
        same_reads(path, 4096, first=len(head.encode()))
