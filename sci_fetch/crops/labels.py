"""Category name → label written to the CSV: the label map, the exclude list and the keep-list.

Names are compared stripped and case-folded ("Striped Skunk" is "striped skunk"): the exports are
typed by people, and a typo fix that misses on case would silently leave the typo in.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.crops.reasons import Reason
from sci_fetch.errors import UsageError

# Typos found in the SCI data; `--label-map sci` applies them.
SCI_LABEL_MAP: dict[str, str] = {"liz": "lizard", "rodnet": "rodent", "striped skunk": "skunk", "bug": "insect"}
BUILTIN_MAPS: dict[str, dict[str, str]] = {"sci": SCI_LABEL_MAP}

_HEADER_FIRST = frozenset({"from", "old", "source", "original", "category", "category_name", "name"})


def norm(name: str) -> str:
    return name.strip().casefold()


def _checked(pairs: Iterable[tuple[str, object, str]], origin: str) -> dict[str, str]:
    """Build the normalised map; ``where`` names the line or key so a user can fix the file."""
    out: dict[str, str] = {}
    for key, value, where in pairs:
        if not isinstance(value, str):
            kind = "table" if isinstance(value, dict) else type(value).__name__
            raise UsageError(f"label map {origin}{where}: '{key}' must map to a name (a string), got {kind}")
        if not key.strip() or not value.strip():
            raise UsageError(f"label map {origin}{where}: empty name in '{key}' -> '{value}'")
        k = norm(key)
        if k in out and out[k] != value.strip():
            raise UsageError(f"label map {origin}{where}: '{key}' is mapped twice ('{out[k]}' and '{value.strip()}')")
        out[k] = value.strip()
    return out


def _read_toml(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"label map {path}: not valid TOML ({exc})") from exc
    for table in ("label_map", "labels"):
        if set(data) == {table} and isinstance(data[table], dict):
            data = data[table]
            break
    return _checked(((k, v, f" key '{k}'") for k, v in data.items()), str(path))


def _read_csv(path: Path) -> dict[str, str]:
    rows: list[tuple[str, object, str]] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        first = True
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise UsageError(f"label map {path} line {line}: expected 2 columns (from,to), got {len(row)}")
            if first and norm(row[0]) in _HEADER_FIRST:
                first = False
                continue
            first = False
            rows.append((row[0], row[1], f" line {line}"))
    return _checked(rows, str(path))


def load_label_map(spec: Path | Mapping[str, str] | None) -> dict[str, str]:
    """The label map as {normalised name: label}; raises UsageError naming the file and line."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return _checked(((str(k), v, f" key '{k}'") for k, v in spec.items()), "(inline)")
    path = Path(spec)
    if str(spec) in BUILTIN_MAPS:
        return dict(BUILTIN_MAPS[str(spec)])
    if not path.is_file():
        raise UsageError(f"label map file {path} does not exist (give a .toml or .csv file, or 'sci')")
    try:
        if path.suffix.lower() == ".toml":
            return _read_toml(path)
        if path.suffix.lower() in (".csv", ".txt"):
            return _read_csv(path)
    except UnicodeDecodeError as exc:
        raise UsageError(f"label map {path}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise UsageError(f"label map {path}: cannot read ({exc.strerror or exc})") from exc
    raise UsageError(f"label map {path}: unknown format '{path.suffix}'; use a .toml table or a 2-column .csv")


@dataclass(frozen=True)
class Labels:
    """What happens to a category name: the label it gets, or why its boxes are left out."""

    mapping: dict[str, str]
    exclude: frozenset[str]
    keep: frozenset[str] | None

    def label(self, name: str) -> str:
        return self.mapping.get(norm(name), name)

    def verdict(self, name: str) -> tuple[str, Reason | None]:
        label = self.label(name)
        if norm(name) in self.exclude or norm(label) in self.exclude:
            return label, Reason.excluded_category
        if self.keep is not None and norm(label) not in self.keep:
            return label, Reason.not_kept
        return label, None


def build_labels(
    label_map: Path | Mapping[str, str] | None, exclude: Iterable[str], keep: Iterable[str] | None
) -> Labels:
    return Labels(
        mapping=load_label_map(label_map),
        exclude=frozenset(norm(e) for e in exclude),
        keep=frozenset(norm(k) for k in keep) if keep else None,
    )
