"""Writes docs/schema/*.json, the JSON Schema of every document sci_fetch prints or writes for programs.

``python -m sci_fetch.observe.schema [DIR]`` after changing a model in observe/outputs.py; tests/test_observe_schema.py
fails while the committed files and the models differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sci_fetch.observe.outputs import SCHEMAS

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def schema_texts() -> dict[str, str]:
    """File name → the schema's text, as committed (sorted keys, 2-space indent, newline at the end)."""
    return {
        name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n" for name, model in SCHEMAS.items()
    }


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_texts().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else DEFAULT_DIR
    for path in write(folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
