"""Where each crop goes: MegaDetector's ground-truth naming ``<image without extension>___cropNN.jpg``.

NN is the annotation's index among its image's annotations in file order, so a crop keeps its name
when options (exclude, keep, min_size) change which boxes are cropped.

Two images that differ only in their extension (``a/x.jpg`` and ``a/x.png``) would get the same crop
names and overwrite each other's crops on every run. Such images keep their whole file name instead
(``a/x.jpg___crop00.jpg``, ``a/x.png___crop00.jpg``): the rule looks only at the COCO file's names,
never at their order, so the names are the same on every run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Literal

from sci_fetch.keys.mapping import UnsafePathError, safe_relative_path

Naming = Literal["nested", "flat"]

CROP_MARK = "___crop"


def crop_base(file_name: str, naming: Naming = "nested", keep_extension: bool = False) -> str:
    """The crop name before ``___cropNN.jpg``; raises UnsafePathError for a file_name that could leave the folder."""
    rel = PurePosixPath(safe_relative_path(file_name))
    if keep_extension:
        return rel.name if naming == "flat" else rel.as_posix()
    return rel.stem if naming == "flat" else rel.with_suffix("").as_posix()


def crop_relpath(file_name: str, index: int, naming: Naming = "nested", keep_extension: bool = False) -> str:
    """Relative POSIX path of a crop; raises UnsafePathError for a file_name that could leave the folder."""
    return f"{crop_base(file_name, naming, keep_extension)}{CROP_MARK}{index:02d}.jpg"


def flat_key(file_name: str) -> str:
    """What two images must not share under flat naming (their crops would overwrite each other)."""
    return PurePosixPath(file_name).stem


def extension_clashes(file_names: Iterable[str]) -> set[str]:
    """The nested crop bases that two different file names share (``a/x.jpg`` and ``a/x.png``).

    Names are compared as written, so the result is the same whatever order the images come in.
    """
    first: dict[str, str] = {}
    clashes: set[str] = set()
    for name in file_names:
        try:
            base = crop_base(name)
        except UnsafePathError:  # rejected later, with its reason
            continue
        seen = first.setdefault(base, name)
        if seen != name:
            clashes.add(base)
    return clashes


def crop_path(crops_dir: Path, file_name: str, index: int, naming: Naming = "nested") -> Path:
    return crops_dir / crop_relpath(file_name, index, naming)
