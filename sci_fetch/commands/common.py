"""Flags made from the Settings model, so each option is declared and documented in one place.

Also the flags every command shares, spelled the same everywhere: ``--output`` for the images folder,
``--config``, ``-v``, ``--shard K/N``.
"""

from __future__ import annotations

import argparse
import enum
import os
import tomllib
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sci_fetch.errors import UsageError
from sci_fetch.keys.shard import parse_shard
from sci_fetch.settings import DEFAULT_CONFIG, ENV_PREFIX, Settings, load_settings


def show_value(value: typing.Any) -> str:
    """A value as a user would type it on the command line or in settings.toml (never a Python repr)."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={show_value(v)}" for k, v in value.items())
    return str(value)


def _file_defaults() -> tuple[Path | None, dict[str, typing.Any]]:
    """The settings file a plain run would read, and what it sets; for help only, so it never fails."""
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    path = Path(env) if env else DEFAULT_CONFIG
    try:
        with open(path, "rb") as fh:
            return path, tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None, {}


def default_text(
    name: str,
    default: typing.Any,
    description: str,
    env: str,
    file_values: tuple[Path | None, dict[str, typing.Any]] | None = None,
) -> str:
    """``(default: X; FILE sets Y; env NAME)``: the built-in default and where another one would come from."""
    parts = []
    shown = show_value(default)
    if shown:
        parts.append(f"default: {shown}")
    elif "default" not in description and "empty means" not in description:
        parts.append("default: not set")
    path, values = file_values or (None, {})
    if path is not None and name in values and show_value(values[name]) != shown:
        parts.append(f"in effect here: {show_value(values[name]) or 'empty'}, from {path}")
    parts.append(f"env {env}")
    return f"({'; '.join(parts)})"


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``-v`` on every command; ``-v`` works before or after the command name."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="TOML",
        help=f"settings file (default: ${ENV_PREFIX}CONFIG, else ./settings.toml if present)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug details")


def add_output_flag(parser: argparse.ArgumentParser, *aliases: str, positional: bool = False, what: str = "") -> None:
    """The images folder is ``--output`` in every command; older spellings stay accepted."""
    help_text = what or "folder the images are written under, as <output>/<file_name>"
    parser.add_argument(
        "--output",
        *aliases,
        dest="output",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"{help_text} (default: images; env {ENV_PREFIX}OUTPUT)",
    )
    if positional:
        parser.add_argument(
            "output_dir", nargs="?", type=Path, default=None, metavar="OUTPUT", help="the same as --output"
        )


def output_from(args: argparse.Namespace) -> Path | None:
    """``--output`` or the positional spelling; giving both differently is a mistake worth a line."""
    flag, positional = getattr(args, "output", None), getattr(args, "output_dir", None)
    if flag is not None and positional is not None and flag != positional:
        raise UsageError(f"two output folders given: {positional} and --output {flag}; give one")
    return flag or positional


def add_shard_flags(parser: argparse.ArgumentParser) -> None:
    """``--shard K/N`` is the documented form; ``--shard-count`` / ``--shard-index`` still work."""
    parser.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help=f"take share K of N, e.g. 0/4 (env {ENV_PREFIX}SHARD_COUNT and {ENV_PREFIX}SHARD_INDEX; "
        "the index may come from JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX)",
    )
    parser.add_argument("--shard-count", dest="shard_count", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shard-index", dest="shard_index", type=int, default=None, help=argparse.SUPPRESS)


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


def add_model_flag(
    parser: argparse.ArgumentParser, name: str, field: FieldInfo, help_text: str, **spec: typing.Any
) -> None:
    """The flag of one model field, for every command: ``--the-name``, default None so a flag not given
    overrides nothing; a bool is ``--x/--no-x``. ``spec``: argparse details (type, metavar, choices, action);
    without it they come from the field's type."""
    flag = "--" + name.replace("_", "-")
    help_text = help_text.replace("%", "%%")
    if field.annotation is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        return
    if not spec:
        kind, choices = _flag_type(field.annotation)
        spec = {"type": kind, "choices": choices, "metavar": name.upper() if not choices else None}
    parser.add_argument(flag, dest=name, default=None, help=help_text, **spec)


# Fields whose flag is made by a shared helper above, not from the model.
_SHARED = {"output": add_output_flag, "shard_count": None, "shard_index": None}


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], positional: str | None = None, only: set[str] | None = None
) -> None:
    add_common_flags(parser)
    file_values = _file_defaults()
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        if name == "crops" or isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue  # sections such as [crops] have their own command
        if name in _SHARED:
            if name == "output":
                add_output_flag(parser)
            elif name == "shard_count":
                add_shard_flags(parser)
            continue
        description = field.description or ""
        if name == positional:
            help_text = f"{description} (or the '{name}' setting; env {ENV_PREFIX}{name.upper()})"
            parser.add_argument(name, nargs="?", type=Path, default=None, help=help_text)
            continue
        help_text = (
            f"{description} {default_text(name, field.default, description, ENV_PREFIX + name.upper(), file_values)}"
        )
        add_model_flag(parser, name, field, help_text)


def apply_shard(args: argparse.Namespace) -> None:
    """``--shard K/N`` into shard_index and shard_count."""
    if getattr(args, "shard", None):
        try:
            args.shard_index, args.shard_count = parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc


def settings_from_args(args: argparse.Namespace, **sections: dict[str, typing.Any]) -> Settings:
    """Settings from the flags that were given; ``sections`` carry nested ones such as crops={...}."""
    apply_shard(args)
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    output = output_from(args)
    if output is not None:
        overrides["output"] = output
    for name, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            overrides[name] = given
    return load_settings(getattr(args, "config", None), overrides)
