import json

import pytest

from sci_fetch.coco.models import CocoImage
from sci_fetch.coco.source import iter_annotations, iter_images, read_categories
from sci_fetch.errors import InputError, RecordError


def write(tmp_path, text, name="coco.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_images_stream_with_bad_records_named(tmp_path):
    path = write(
        tmp_path,
        json.dumps(
            {
                "annotations": [],
                "images": [
                    {"id": "p:1", "file_name": "a/1.jpg", "width": 10, "height": 5},
                    {"file_name": "a/2.jpg"},
                    {"id": "p:3", "file_name": 7.5, "width": "wide"},
                    "just a string",
                    {"id": 42, "file_name": "a/42.jpg"},
                ],
            }
        ),
    )
    items = list(iter_images(path))
    assert isinstance(items[0], CocoImage) and items[0].width == 10
    assert isinstance(items[1], RecordError) and "id" in items[1].reason and items[1].index == 1
    assert isinstance(items[2], RecordError) and items[2].record_id == "p:3" and "width" in items[2].reason
    assert isinstance(items[3], RecordError) and "not an object" in items[3].reason
    assert isinstance(items[4], CocoImage) and items[4].id == "42"
    assert str(items[2]).startswith("images[2] (id 'p:3')")


@pytest.mark.parametrize(
    "text,message",
    [
        ("this is not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"annotations": []}', "has no 'images' array"),
        ('{"images": {"a": 1}}', "'images' is not an array"),
        ('{"images": 5}', "'images' is not an array"),
        ("[1, 2]", "not a COCO file"),
    ],
)
def test_unusable_files_fail_at_once_with_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as info:
        list(iter_images(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        list(iter_images(tmp_path / "nope.json"))


def test_truncated_file_fails_with_input_error_after_good_records(tmp_path):
    path = write(tmp_path, '{"images": [{"id": "p:1", "file_name": "a.jpg"}, {"id": "p:2", "fil')
    it = iter_images(path)
    assert next(it).id == "p:1"
    with pytest.raises(InputError, match="truncated"):
        list(it)


def test_images_after_annotations_are_found(tmp_path):
    path = write(tmp_path, json.dumps({"annotations": [{"images": []}], "images": [{"id": "x", "file_name": "x.jpg"}]}))
    assert [i.id for i in iter_images(path)] == ["x"]


def test_annotations_and_categories_from_the_shared_example(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1].parent / "shared" / "animl-coco-example.json"
    if not example.exists():
        pytest.skip("shared/ is not beside the checkout")
    anns = list(iter_annotations(example))
    assert all(not isinstance(a, RecordError) for a in anns)
    assert [a.id for a in anns][:2] == ["obj0001", "obj0002"]
    assert anns[5].bbox == [None, None, None, None]
    cats = read_categories(example)
    assert cats[0].id == 0 and cats[0].name == "empty"


def test_bbox_of_wrong_length_is_a_record_error(tmp_path):
    path = write(
        tmp_path,
        json.dumps({"images": [], "annotations": [{"id": 1, "image_id": "x", "category_id": 1, "bbox": [1, 2, 3]}]}),
    )
    (item,) = list(iter_annotations(path))
    assert isinstance(item, RecordError) and "4 values" in item.reason and str(item).startswith("annotations[0]")


# ---- hostile files (issue 21: 6, 7 and the smaller ones) ----------------------------------------------

_DEEP = 100_000
_HOSTILE_DEPTH = {
    "inside a record": (
        '{"images": [{"id": "a", "file_name": "a.jpg"}, {"id": "b", "x": ' + "[" * _DEEP + "]" * _DEEP + "}]}",
        "in images[1]",
    ),
    "at the top level": ('{"info": ' + "[" * _DEEP + "]" * _DEEP + ', "images": []}', "in info"),
    "left unclosed": ('{"images": [{"id": "a", "file_name": "a.jpg"}, ' + "[" * _DEEP, "in images[1]"),
}


@pytest.mark.parametrize("case", sorted(_HOSTILE_DEPTH))
def test_deep_nesting_is_refused_in_bounded_memory(tmp_path, case):
    """200 KB of nested arrays took gigabytes in ijson's prefixes; under a 1.5 GB address-space cap the
    read must end in one InputError naming the depth and the record, for every reader of the file."""
    import subprocess
    import sys

    text, where = _HOSTILE_DEPTH[case]
    path = write(tmp_path, text)
    script = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
from pathlib import Path
from sci_fetch.coco.source import count_images, iter_images, iter_annotations
from sci_fetch.errors import InputError
path = Path({str(path)!r})
print("count", count_images(path))
for read in (iter_images, iter_annotations):
    try:
        list(read(path))
    except InputError as exc:
        print("refused", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "count None"
    assert len(lines) == 3, lines
    for line in lines[1:]:
        assert "nested more than 64 levels deep" in line and where in line and str(path) in line


def test_a_string_of_megabytes_is_one_invalid_record_in_flat_memory(tmp_path):
    """A 20 MB file_name (with escapes and multi-byte characters in it): that record is invalid, naming the
    field; the records around it are read; no copy of the 20 MB is held."""
    import subprocess
    import sys

    path = tmp_path / "coco.json"
    body = b'x\\"\\\\\xc3\xa9' * (4 << 20)
    path.write_bytes(
        b'{"images": [{"id": "a", "file_name": "a.jpg"}, {"id": "b", "file_name": "'
        + body
        + b'"}, {"id": "c", "file_name": "c\\u00e9.jpg"}]}'
    )
    script = f"""
import resource
from pathlib import Path
from sci_fetch.coco.source import count_images, iter_images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
items = list(iter_images(Path({str(path)!r})))
print([type(i).__name__ for i in items], count_images(Path({str(path)!r})))
print(items[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    kinds, error, grown_mb = done.stdout.splitlines()
    assert kinds == "['CocoImage', 'RecordError', 'CocoImage'] 3"
    assert (
        error == "images[1] (id 'b'): record: Value error, field 'file_name' is a string of more than 1 MiB (left out)"
    )
    assert int(grown_mb) < 16, f"RSS grew {grown_mb} MB for a 20 MB string"


def test_the_string_filter_passes_every_other_byte_unchanged():
    """LongStringFilter read in odd-sized pieces (escapes and UTF-8 split at every place) changes nothing
    but strings over 1 MiB."""
    import io

    from sci_fetch.coco.guard import LongStringFilter

    doc = json.dumps(
        {"images": [{"id": f'p:{i}\\"q', "file_name": f"é/{i}\\\\.jpg", "n": [1, 2.5, None]} for i in range(300)]},
        ensure_ascii=False,
    ).encode()
    for size in (1, 2, 3, 7, 64, 4096):
        reader = LongStringFilter(io.BytesIO(doc))
        pieces = iter(lambda r=reader, n=size: r.read(n), b"")
        assert b"".join(pieces) == doc, size


def test_a_megabyte_of_whitespace_is_still_refused(tmp_path):
    path = tmp_path / "coco.json"
    path.write_bytes(b'{"images": [{"id": "a", "file_name": "a.jpg"}' + b" " * (3 << 20) + b"]}")
    with pytest.raises(InputError, match="runs on for more than 1 MiB"):
        list(iter_images(path))


def test_string_fields_are_bounded_and_the_error_is_short(tmp_path):
    """A 100 KB file_name (and id) is an invalid record; the RecordError carries neither whole."""
    long_name = "d/" + "n" * 100_000 + ".jpg"
    long_id = "i" * 200_000
    path = write(
        tmp_path,
        json.dumps(
            {
                "images": [
                    {"id": "p:1", "file_name": long_name},
                    {"id": long_id, "file_name": "a.jpg"},
                    {"id": "p:3", "file_name": "b.jpg", "location": "L" * 5000},
                    {"id": "p:4", "file_name": "c.jpg"},
                ]
            }
        ),
    )
    items = list(iter_images(path))
    assert [type(i).__name__ for i in items] == ["RecordError", "RecordError", "RecordError", "CocoImage"]
    assert "file_name" in items[0].reason and "4096" in items[0].reason
    assert "id" in items[1].reason and "1024" in items[1].reason
    assert "location" in items[2].reason
    for item in items[:3]:
        assert len(str(item)) < 400


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_is_named_not_called_truncation(tmp_path, token):
    path = write(tmp_path, '{"images": [{"id": "a", "file_name": "a.jpg", "width": ' + token + "}]}")
    with pytest.raises(InputError) as info:
        list(iter_images(path))
    message = str(info.value)
    assert f"{token} in" in message and "not valid JSON" in message and "null" in message
    assert "truncated" not in message


def test_nan_later_in_the_file_is_named_too(tmp_path):
    images = [{"id": f"p:{i}", "file_name": f"{i:06d}.jpg" + "x" * 200} for i in range(2000)]
    text = json.dumps({"images": images})
    text = text[: len(text) - 2] + ', {"id": "p:z", "file_name": "z.jpg", "width": NaN}]}'
    path = write(tmp_path, text)
    with pytest.raises(InputError, match="NaN in 'images' is not valid JSON"):
        list(iter_images(path))


def test_utf8_bom_is_read(tmp_path):
    """Windows editors write a byte-order mark; JSON parsers refuse it, sci_fetch skips it."""
    from sci_fetch.coco.source import count_images

    path = tmp_path / "coco.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"images": [{"id": "p:1", "file_name": "a.jpg"}]}).encode())
    (item,) = list(iter_images(path))
    assert isinstance(item, CocoImage) and item.file_name == "a.jpg"
    assert count_images(path) == 1


def test_count_images_counts_and_shards(tmp_path):
    from sci_fetch.coco.source import count_images
    from sci_fetch.keys.shard import shard_of

    ids = [f"p:{i}" for i in range(50)]
    path = write(tmp_path, json.dumps({"images": [{"id": i, "file_name": f"{i}.jpg"} for i in ids]}))
    assert count_images(path) == 50
    assert count_images(path, lambda i: shard_of(i, 3) == 1) == sum(1 for i in ids if shard_of(i, 3) == 1)
    assert count_images(write(tmp_path, '{"images": [{"id": "a"', "cut.json")) is None
