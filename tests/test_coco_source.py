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
