"""Pure mapping from a COCO image record to the S3 key to read and the file to write.

Everything here is a pure function of its arguments so it can be tested exhaustively; the one
safety rule that matters most lives here too: no ``file_name`` may ever resolve outside the output dir.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

from sci_fetch.coco.models import CocoImage
from sci_fetch.fs.layout import PARTIAL_SUFFIX, STATE_DIR

MAX_NAME_BYTES = 255  # NAME_MAX of ext4, XFS, APFS, NTFS (in UTF-16 units there, at most as many)
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_KEY_BYTES = 1024  # S3's limit on an object key

_ANIML_ID = re.compile(r"^[^:/]+:([0-9a-f]{32})$")
_HEX = "0123456789abcdef"
_CONTROL = re.compile(r"[\x00-\x1f]")
_FOLDERS_KEPT = 1 << 15  # a LILA-sized job has ~17,000 folders; the cache stays bounded whatever the file
_TEMPLATE_FIELDS = frozenset({"id", "id_dash", "file_name", "stem", "ext", "variant"})


class Variant(str, Enum):
    original = "original"
    medium = "medium"
    small = "small"


@dataclass(frozen=True, slots=True)
class Task:
    """One object to fetch: the unit the engine, storage layer and manifest pass around.

    A plain dataclass, not a pydantic model: it is built from an already validated record, once per
    image, and on a resume of 110,000 images validation here would cost more than the rest of planning.
    """

    image_id: str
    key: str
    dest: str  # relative POSIX path under the output dir
    expected_md5: str | None = None


class UnsafePathError(ValueError):
    """A file_name that could write outside the output dir or cannot be a file name."""


def check_template(template: str) -> None:
    """Reject a key template with unknown or positional fields before any record is read."""
    for _text, field, _spec, _conv in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in _TEMPLATE_FIELDS:
            known = ", ".join("{" + f + "}" for f in sorted(_TEMPLATE_FIELDS))
            raise ValueError(f"unknown field {{{field}}} in key template; known: {known}")


def extension(image: CocoImage) -> str:
    """The file extension without the dot, as the export spells it (Animl keys keep the case)."""
    for name in (image.serving_bucket_key, image.file_name):
        if name:
            suffix = PurePosixPath(name).suffix
            if suffix:
                return suffix[1:]
    return "jpg"


def object_key(image: CocoImage, variant: Variant = Variant.original, template: str | None = None) -> str:
    """The S3 key holding ``image``'s bytes.

    A template wins (other COCO Camera Traps sets keep the file under a prefix + file_name); then
    Animl's own ``serving_bucket_key`` for originals; else Animl's naming ``<variant>/<id>-<variant>.<ext>``.
    """
    if template:
        stem = PurePosixPath(image.file_name).stem
        key = template.format(
            id=image.id,
            id_dash=image.id.replace(":", "-"),
            file_name=image.file_name,
            stem=stem,
            ext=extension(image),
            variant=variant.value,
        )
    elif variant is Variant.original and image.serving_bucket_key:
        key = image.serving_bucket_key
    else:
        key = f"{variant.value}/{image.id}-{variant.value}.{extension(image)}"
    if not key or key.startswith("/"):
        raise UnsafePathError(f"key {key!r} is empty or absolute")
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES:  # 256 characters fit in any case
        raise UnsafePathError(f"key is longer than {MAX_KEY_BYTES} bytes, the longest S3 takes")
    return key


def safe_relative_path(file_name: str) -> str:
    """``file_name`` as a normalised relative POSIX path, or UnsafePathError saying what is wrong.

    Rejects rather than repairs: a silently rewritten path would not be where the user's notebooks look.
    The common name is cleared by a few C-level scans and its folder's cached verdict (a job has a few
    folders per hundred images); anything else goes through every check in turn, which names the first
    problem. ``isprintable`` is False for every control character (NUL among them) and for some harmless
    ones too, which then only take the longer way.
    """
    folder, slash, name = file_name.rpartition("/")
    if (
        file_name.isprintable()  # no control character
        and "\\" not in file_name
        and file_name[1:2] != ":"  # no drive letter (C:); a leading / makes an empty first part
        and len(file_name) <= MAX_PATH_BYTES // 4
        and _good_part(name)
        and not name.endswith(PARTIAL_SUFFIX)
        and (_good_folder(folder) if slash else name != STATE_DIR)
    ):
        return file_name
    return _checked_relative_path(file_name)


def _good_part(part: str) -> bool:
    """A name part a file system takes; a part of at most 63 characters is at most 252 UTF-8 bytes."""
    if part in ("", ".", ".."):
        return False
    return len(part) <= MAX_NAME_BYTES // 4 or len(part.encode()) <= MAX_NAME_BYTES


@functools.lru_cache(maxsize=_FOLDERS_KEPT)
def _good_folder(folder: str) -> bool:
    """Every part of a folder path is a name a file system takes, and it is not sci_fetch's state folder."""
    parts = folder.split("/")
    return parts[0] != STATE_DIR and all(map(_good_part, parts))


def _checked_relative_path(file_name: str) -> str:
    """Every check of safe_relative_path in turn, so the message names the first problem found."""
    if "\x00" in file_name:
        raise UnsafePathError("file_name contains a NUL byte")
    if "\\" in file_name:
        raise UnsafePathError("file_name contains a backslash")
    if file_name.startswith("/"):
        raise UnsafePathError("file_name is an absolute path")
    if file_name[1:2] == ":" and file_name[0].isascii() and file_name[0].isalpha():  # C:, as ^[A-Za-z]:
        raise UnsafePathError("file_name starts with a drive letter")
    if _CONTROL.search(file_name):
        raise UnsafePathError("file_name contains a control character")
    if len(file_name.encode()) > MAX_PATH_BYTES:
        raise UnsafePathError(f"file_name is longer than {MAX_PATH_BYTES} bytes, the longest path a file system takes")
    parts = file_name.split("/")
    for part in parts:  # a part of at most 63 characters is at most 252 UTF-8 bytes: no encode for it
        if len(part) > MAX_NAME_BYTES // 4 and len(part.encode()) > MAX_NAME_BYTES:
            raise UnsafePathError(
                f"file_name has a part longer than {MAX_NAME_BYTES} bytes, the longest name a file system takes"
            )
        if part == "":
            raise UnsafePathError("file_name has an empty path part (// or a trailing /)")
        if part in (".", ".."):
            raise UnsafePathError(f"file_name has a '{part}' path part")
    if parts[0] == STATE_DIR:
        raise UnsafePathError(f"file_name is inside sci_fetch's state folder {STATE_DIR}/")
    if parts[-1].endswith(PARTIAL_SUFFIX):
        raise UnsafePathError(f"file_name ends with {PARTIAL_SUFFIX}, which sci_fetch uses for unfinished files")
    return "/".join(parts)


def animl_md5(image_id: str) -> str | None:
    """The md5 Animl puts in an image id (``<project>:<md5>``): the md5 of the original file's bytes."""
    project, _, md5 = image_id.partition(":")
    if len(md5) == 32 and project and "/" not in project and not md5.strip(_HEX):
        return md5  # what the pattern below matches, found without it for the usual id
    match = _ANIML_ID.match(image_id)
    return match.group(1) if match else None


def make_task(
    image: CocoImage,
    variant: Variant = Variant.original,
    template: str | None = None,
    verify_id_md5: bool = True,
) -> Task:
    """Everything the engine needs to fetch one image; raises UnsafePathError for a bad record."""
    dest = safe_relative_path(image.file_name)
    key = object_key(image, variant, template)
    expected = animl_md5(image.id) if verify_id_md5 and variant is Variant.original else None
    return Task(image_id=image.id, key=key, dest=dest, expected_md5=expected)
