"""Where each crop goes: MegaDetector's ground-truth naming ``<image without extension>___cropNN.jpg``.

NN is the annotation's index among its image's annotations in file order, so a crop keeps its name
when options (exclude, keep, min_size) change which boxes are cropped.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from sci_fetch.keys.mapping import safe_relative_path

Naming = Literal["nested", "flat"]

CROP_MARK = "___crop"


def crop_relpath(file_name: str, index: int, naming: Naming = "nested") -> str:
    """Relative POSIX path of a crop; raises UnsafePathError for a file_name that could leave the folder."""
    rel = PurePosixPath(safe_relative_path(file_name))
    base = rel.stem if naming == "flat" else rel.with_suffix("").as_posix()
    return f"{base}{CROP_MARK}{index:02d}.jpg"


def flat_key(file_name: str) -> str:
    """What two images must not share under flat naming (their crops would overwrite each other)."""
    return PurePosixPath(file_name).stem


def crop_path(crops_dir: Path, file_name: str, index: int, naming: Naming = "nested") -> Path:
    return crops_dir / crop_relpath(file_name, index, naming)
