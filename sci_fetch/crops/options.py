"""Every option of the crop post-stage, typed once; read from the global settings' ``[crops]`` table.

The settings keep that table as given (``Settings.crops``: the ``[crops]`` TOML table,
``SCI_FETCH_CROPS__<NAME>`` variables and ``sci-fetch crops`` flags, in that precedence) and know nothing
of crops; ``crop_options`` builds and checks the typed options here, on the crops side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import NoDecode  # comma-separated lists from SCI_FETCH_CROPS__EXCLUDE, not JSON

from sci_fetch.keys.mapping import Variant
from sci_fetch.settings import Settings

DEFAULT_CSV_NAME = "crops.csv"
DEFAULT_REJECTS_NAME = "crops_rejected.csv"


def usable_cpus() -> int:
    """CPUs this process may run on (a container or taskset can allow fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _split_list(value: Any) -> Any:
    """Accept ``"empty, person"`` as well as a list: flags, env and TOML all spell lists that way."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return value


class CropOptions(BaseModel):
    """Options of ``sci-fetch crops`` and of the crop step run after ``download``."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    after_download: bool = Field(False, description="make the crops and the crop CSV when `download` ends")
    crops_dir: Path = Field(Path("crops"), description="folder the crops are written under")
    csv: Path | None = Field(None, description=f"crop-label CSV; default <crops_dir>/{DEFAULT_CSV_NAME}")
    rejects_csv: Path | None = Field(
        None,
        description=f"CSV of the boxes that gave no crop, with the reason; default <crops_dir>/{DEFAULT_REJECTS_NAME}",
    )
    padding: float = Field(
        0.0, ge=0, le=10, description="margin added on each side, as a fraction of the box's width/height (0.1 = 10%)"
    )
    square: bool = Field(
        False,
        description="square crops as MegaDetector makes them: the short side grows to the long one around the centre, shifted into the image",
    )
    min_size: float = Field(
        1.0, ge=0, description="skip boxes narrower or shorter than this many pixels of the downloaded image"
    )
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality of the crops")
    exclude: Annotated[list[str], NoDecode] = Field(
        ["empty", "person", "vehicle", "animal"],
        description="category names whose boxes are not cropped (before or after the label map); the SCI work's list, as `filter` drops",
    )
    min_confidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description="skip annotations whose `confidence` is below this; annotations without one are kept",
    )
    naming: Literal["nested", "flat"] = Field(
        "nested",
        description="nested: <crops_dir>/<file_name without extension>___cropNN.jpg; flat: <crops_dir>/<file stem>___cropNN.jpg",
    )
    label_map: Path | dict[str, str] | None = Field(
        None,
        description="fix category names: a TOML table or 2-column CSV (from,to), an inline table, or `sci` for the SCI typo fixes",
    )
    keep: Annotated[list[str] | None, NoDecode] = Field(
        None, description="write only these labels (after the label map); empty means all"
    )
    recheck: bool = Field(
        False,
        description="fully decode existing crops to catch truncated ones (slower); otherwise only their header is read",
    )
    workers: int = Field(
        default_factory=usable_cpus, ge=1, le=1024, description="processes decoding images; default every usable CPU"
    )
    variant: Variant | None = Field(
        None,
        description="variant the images were downloaded as; default the download's `variant` (original when run alone)",
    )
    max_size: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="shrink each crop so its longer side is at most this many pixels (never enlarged), aspect kept, with a Lanczos filter (Pillow's LANCZOS); JPEGs are decoded at 1/2, 1/4 or 1/8 scale first when the box is that much larger",
    )
    size: tuple[int, int] | None = Field(
        None,
        description="resize each crop to exactly WxH pixels (e.g. 224x224) with a Lanczos filter (Pillow's LANCZOS); add --square to keep the aspect",
    )
    decoder: Literal["auto", "vips", "pillow"] = Field(
        "auto",
        description="JPEG decoder: vips decodes only the rows the boxes need (pip install 'sci-fetch[fast]'); pillow decodes whole images; auto uses vips when installed. Both give the same crops",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: Any) -> Any:
        """``workers = "auto"`` (or empty) means the built-in default: every usable CPU."""
        return usable_cpus() if str(value).strip().lower() in ("auto", "") else value

    @field_validator("size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        """``224x224`` from a flag, env or TOML; a [w, h] list from TOML."""
        if isinstance(value, str):
            if value.strip() == "":
                return None
            parts = value.lower().replace(" ", "").split("x")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError("must look like WxH with positive whole pixels, e.g. 224x224")
            return (int(parts[0]), int(parts[1]))
        return value

    @field_validator("size")
    @classmethod
    def _size_positive(cls, value: tuple[int, int] | None, info: ValidationInfo) -> tuple[int, int] | None:
        if value is not None and not all(0 < v <= 65535 for v in value):
            raise ValueError("width and height must be 1..65535")
        if value is not None and info.data.get("max_size") is not None:  # max_size is validated first
            raise ValueError("give --max-size or --size, not both")
        return value

    @field_validator("max_size", mode="before")
    @classmethod
    def _empty_max_size(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("exclude", "keep", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("keep")
    @classmethod
    def _empty_keep_is_all(cls, value: list[str] | None) -> list[str] | None:
        return value or None

    @field_validator("label_map", "csv", "rejects_csv", "min_confidence", "variant", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    def csv_path(self) -> Path:
        return self.csv or self.crops_dir / DEFAULT_CSV_NAME

    def rejects_path(self) -> Path:
        return self.rejects_csv or self.crops_dir / DEFAULT_REJECTS_NAME


def crop_options(settings: Settings) -> CropOptions:
    """The crop options of ``settings``' ``[crops]`` table, the variant defaulting to the one the images were
    downloaded as; a wrong value is a UsageError naming its flag, variable and settings file."""
    try:
        options = CropOptions(**settings.crops)
    except ValidationError as exc:
        raise settings.section_error(exc, "crops") from exc
    return options.model_copy(update={"variant": options.variant or settings.variant})
