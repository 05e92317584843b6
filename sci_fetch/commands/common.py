"""Flags made from the Settings model, so each option is declared and documented in one place."""

from __future__ import annotations

import argparse
import enum
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from sci_fetch.settings import ENV_PREFIX, Settings, load_settings


def _flag_type(annotation: typing.Any) -> tuple[typing.Any, list[str] | None]:
    """The argparse type and choices of a field; Optional[X] is X (empty means unset)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args else annotation
    if typing.get_origin(base) is typing.Literal:
        return str, list(typing.get_args(base))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return str, [m.value for m in base]
    if base in (int, float, Path, str):
        return base, None
    return str, None


def add_settings_flags(parser: argparse.ArgumentParser, model: type[BaseModel], positional: str | None = None,
                       only: set[str] | None = None) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="TOML",
                        help=f"settings file (default: ${ENV_PREFIX}CONFIG, else ./settings.toml if present)")
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue  # sections such as [crops] have their own command
        help_text = f"{field.description} (default: {field.default!r}; env {ENV_PREFIX}{name.upper()})".replace("%", "%%")
        if name == positional:
            parser.add_argument(name, nargs="?", type=Path, default=None, help=help_text)
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind, choices = _flag_type(field.annotation)
        parser.add_argument(flag, dest=name, type=kind, choices=choices, default=None, metavar=name.upper() if not choices else None, help=help_text)


def settings_from_args(args: argparse.Namespace, **sections: dict) -> Settings:
    """Settings from the flags that were given; ``sections`` carry nested ones such as crops={...}."""
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    for name, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            overrides[name] = given
    return load_settings(getattr(args, "config", None), overrides)
