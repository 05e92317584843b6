import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sci_fetch.coco.models import CocoImage
from sci_fetch.keys.mapping import (
    UnsafePathError,
    Variant,
    _checked_relative_path,
    animl_md5,
    check_template,
    make_task,
    object_key,
    safe_relative_path,
)

MD5 = "93d7cd6ce8ca79f85dcee05872e8059d"
ANIML = CocoImage(
    id=f"sci_demo:{MD5}",
    file_name=f"sci_demo/X8114654/willows_camp/sci_demo-{MD5}.jpg",
    serving_bucket_key=f"original/sci_demo:{MD5}-original.jpg",
)
LILA = CocoImage(id="loc_0001/seq_01/img_3.JPG", file_name="loc_0001/seq_01/img_3.JPG")


def test_serving_bucket_key_is_used_for_originals():
    assert object_key(ANIML) == f"original/sci_demo:{MD5}-original.jpg"


@pytest.mark.parametrize("variant", [Variant.medium, Variant.small])
def test_variants_follow_animl_naming(variant):
    assert object_key(ANIML, variant) == f"{variant.value}/sci_demo:{MD5}-{variant.value}.jpg"


def test_original_without_serving_bucket_key_is_derived_from_the_id():
    image = CocoImage(id=f"p:{MD5}", file_name=f"p/c/d/p-{MD5}.JPG")
    assert object_key(image) == f"original/p:{MD5}-original.JPG"


def test_key_template_serves_other_data_sets():
    assert object_key(LILA, template="public/cct/{file_name}") == "public/cct/loc_0001/seq_01/img_3.JPG"
    assert object_key(ANIML, template="{variant}/{id_dash}.{ext}") == f"original/sci_demo-{MD5}.jpg"
    assert object_key(LILA, template="x/{stem}") == "x/img_3"


def test_unknown_template_field_is_rejected_with_its_name():
    with pytest.raises(ValueError, match=r"\{idd\}"):
        check_template("images/{idd}")


@pytest.mark.parametrize(
    "name,why",
    [
        ("../evil.jpg", "'..'"),
        ("a/../../evil.jpg", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b.jpg", "empty path part"),
        ("a/b/", "empty path part"),
        ("a\\..\\b.jpg", "backslash"),
        ("a/./b.jpg", "'.'"),
        ("a\x00b.jpg", "NUL"),
        ("C:/x.jpg", "drive letter"),
        (".sci-fetch/manifest.sqlite", "state folder"),
        ("a/b.jpg.partial", ".partial"),
        ("a/\nb.jpg", "control character"),
    ],
)
def test_unsafe_file_names_are_rejected(name, why):
    with pytest.raises(UnsafePathError, match=why):
        safe_relative_path(name)


def test_safe_file_name_is_kept_as_is():
    assert safe_relative_path("sci_demo/X8114654/willows camp/a-b.jpg") == "sci_demo/X8114654/willows camp/a-b.jpg"


def test_animl_md5_only_for_animl_ids():
    assert animl_md5(f"sci_demo:{MD5}") == MD5
    assert animl_md5("loc/img.jpg") is None
    assert animl_md5(f"sci_demo:{MD5[:-1]}") is None
    assert animl_md5(f"sci_demo:{MD5.upper()}") is None


def test_task_carries_expected_md5_only_for_originals():
    assert make_task(ANIML).expected_md5 == MD5
    assert make_task(ANIML, Variant.medium).expected_md5 is None
    assert make_task(ANIML, verify_id_md5=False).expected_md5 is None
    task = make_task(ANIML)
    assert task.dest == ANIML.file_name and task.image_id == ANIML.id


# ---- bounds a file system and S3 put on names (issue 21.7) -------------------------------------------


@pytest.mark.parametrize(
    "file_name,message",
    [
        ("d/" + "é" * 128 + ".jpg", "part longer than 255 bytes"),  # 128 characters, 256 bytes
        ("/".join(["d" * 200] * 21), "longer than 4096 bytes"),
    ],
)
def test_names_no_file_system_takes_are_unsafe(file_name, message):
    with pytest.raises(UnsafePathError, match=message):
        safe_relative_path(file_name)


def test_longest_names_a_file_system_takes_are_kept():
    name = "/".join(["d" * 255] * 16)[:4096]
    assert safe_relative_path(name) == name


def test_key_longer_than_s3_takes_is_unsafe():
    image = CocoImage(id="p:1", file_name="a.jpg")
    with pytest.raises(UnsafePathError, match="longer than 1024 bytes"):
        object_key(image, template="x" * 1020 + "/{file_name}")


# ---- the fast path of safe_relative_path (issue 20: a cheaper record path) ---------------------------

_NAME_CHARS = st.sampled_from(list("ab/.:\\\x00\n\x1fé C") + [".sci-fetch", ".partial", "..", "//", "x" * 70])


def _outcome(check, name: str) -> tuple[str, str]:
    try:
        return ("ok", check(name))
    except UnsafePathError as exc:
        return ("refused", str(exc))


@settings(max_examples=1500, deadline=None)
@given(st.lists(_NAME_CHARS, max_size=12).map("".join) | st.text(max_size=40))
def test_the_fast_path_accepts_and_refuses_as_every_check_in_turn(name):
    """The one-search path with its folder cache says exactly what the full sequence of checks says: the same
    name back, or the same first problem."""
    assert _outcome(safe_relative_path, name) == _outcome(_checked_relative_path, name)
    assert _outcome(safe_relative_path, name) == _outcome(_checked_relative_path, name)  # now from the cache


@pytest.mark.parametrize(
    "name",
    [
        ".sci-fetch",
        ".sci-fetch/a.jpg",
        "a/.sci-fetch/b.jpg",
        "a/b.partial/c.jpg",
        "d/" + "é" * 128 + "/x.jpg",
        "d/" + "é" * 127 + "/x.jpg",
        "z:/x.jpg",
        "1:/x.jpg",
        "a/b\\c.jpg",
        "/".join(["d" * 200] * 6),
    ],
)
def test_names_near_each_rule_get_the_same_verdict_both_ways(name):
    assert _outcome(safe_relative_path, name) == _outcome(_checked_relative_path, name)


_REFERENCE_ANIML_ID = re.compile(r"^[^:/]+:([0-9a-f]{32})$")


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.sampled_from(["p", ":", "/", "\n", MD5, MD5[:31], MD5.upper(), "g", "0"]), max_size=5).map("".join)
    | st.text(max_size=40)
)
def test_animl_md5_finds_what_the_pattern_finds(image_id):
    match = _REFERENCE_ANIML_ID.match(image_id)
    assert animl_md5(image_id) == (match.group(1) if match else None)
