"""All options in one typed model, read once: CLI flag > ``SCI_FETCH_*`` env > settings.toml > defaults.

Everything below reads these typed options; nothing else looks at flags or the environment, so a
value is checked once, here, and a wrong one gets one line naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from sci_fetch.errors import UsageError
from sci_fetch.fs import layout
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.keys.mapping import Variant, check_template
from sci_fetch.keys.shard import index_from_environment
from sci_fetch.storage.options import StorageOptions

ENV_PREFIX = "SCI_FETCH_"
DEFAULT_CONFIG = Path("settings.toml")
MEMORY_BUDGET = 2 << 30  # bytes the downloads in flight of one process may hold (chunk_size x concurrency)


class Settings(BaseSettings):
    """Every option of ``sci-fetch download``; settings.toml documents each with its default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # What to fetch and where
    coco: Path | None = Field(None, description="COCO Camera Traps JSON file (Animl export or LILA-style)")
    output: Path = Field(Path("images"), description="folder the images are written under, as <output>/<file_name>")
    manifest: Path | None = Field(
        None, description=f"resume manifest (SQLite); default <output>/{STATE_DIR}/manifest.sqlite"
    )
    variant: Variant = Field(
        Variant.original, description="Animl image variant: original, medium (fits 940x940) or small (fits 120x120)"
    )
    key_template: str | None = Field(
        None,
        description="S3 key template for other data sets, e.g. 'images/{file_name}'; fields {id} {id_dash} {file_name} {stem} {ext} {variant}; empty means Animl's serving_bucket_key or <variant>/<id>-<variant>.<ext>",
    )
    verify_id_md5: bool = Field(
        True, description="check originals against the md5 inside Animl image ids (<project>:<md5>)"
    )
    limit: int | None = Field(
        None, ge=1, description="fetch only the first N images of the COCO file (for a trial run); empty means all"
    )
    retry_missing: bool = Field(False, description="ask again for keys that were 404 in an earlier run")
    dry_run: bool = Field(
        False,
        description="read and plan everything (manifest rows included) but send no request: how much is left to fetch",
    )
    case_insensitive_names: bool = Field(
        False,
        description="treat destinations that differ only in letter case or Unicode form (Cat.jpg, cat.jpg; one file on macOS and Windows) as duplicates: fetch the first, list the others in failures.csv",
    )
    space_check: bool = Field(
        True,
        description="before a download, HEAD a small random sample of the keys left and refuse to start (exit 4) when their estimated size clearly exceeds the free space",
    )

    # Where the objects are
    bucket: str = Field("animl-images-serving-prod", min_length=3, max_length=255, description="S3 bucket")
    region: str | None = Field("us-west-2", description="AWS region of the bucket")
    profile: str | None = Field(
        None,
        description="AWS profile in ~/.aws; empty means environment / instance credentials; the shipped settings.toml sets animl",
    )
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333; empty means AWS"
    )
    anonymous: bool = Field(
        False,
        description="unsigned requests, for public buckets (LILA and similar); no credentials or profile are read",
    )

    # How hard to push
    concurrency: int = Field(64, ge=1, le=4096, description="downloads in flight at once (per process)")
    processes: str = Field(
        "1", description="event loops in as many processes over disjoint shares of the keys; auto = one per core"
    )
    max_requests_per_second: float | None = Field(
        None, allow_inf_nan=False, gt=0, description="cap on request starts per second; empty means no cap"
    )
    max_attempts: int = Field(5, ge=1, le=100, description="attempts per key before it is recorded as failed")
    retry_base_delay: float = Field(
        0.5, allow_inf_nan=False, ge=0, description="first backoff delay in seconds (exponential, with jitter)"
    )
    retry_max_delay: float = Field(20.0, allow_inf_nan=False, ge=0, description="longest backoff delay in seconds")
    connect_timeout: float = Field(10.0, allow_inf_nan=False, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(
        60.0, allow_inf_nan=False, gt=0, description="seconds without a byte before a read is abandoned and retried"
    )
    outage_limit: float = Field(
        600.0,
        allow_inf_nan=False,
        gt=0,
        description="seconds the endpoint may stay unreachable mid-run (downloads pause, images stay pending) before the run stops with exit 3",
    )
    speed_limit: float = Field(
        1024.0,
        ge=0,
        description="a GET slower than this many bytes/s for speed_time seconds is cut and retried (like curl's --speed-limit); 0 turns the rule off",
    )
    speed_time: float = Field(
        30.0, gt=0, description="seconds a GET may stay under speed_limit before it is cut (like curl's --speed-time)"
    )
    chunk_size: int = Field(1 << 20, ge=4096, le=1 << 30, description="bytes per file write")
    fsync: bool = Field(
        True,
        description="make files durable before the manifest records them done (one syncfs per manifest flush; crash safety on power loss)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="CA bundle (PEM) to trust for HTTPS, for a private S3-compatible server; empty means AWS_CA_BUNDLE or botocore's own",
    )
    direct_get: bool = Field(
        True,
        description="send GETs on a lean signed path (botocore's signature, one keep-alive pool) instead of through the aioboto3 client; about 4x less CPU per object (off by itself behind an HTTP proxy)",
    )

    # Running it
    grace_seconds: float = Field(
        10.0, allow_inf_nan=False, ge=0, description="on SIGINT/SIGTERM, how long in-flight downloads may finish"
    )
    progress: Literal["auto", "bar", "log", "off"] = Field(
        "auto", description="auto: a bar on a terminal, log lines otherwise"
    )
    log_interval: float = Field(
        30.0, allow_inf_nan=False, gt=0, description="seconds between progress log lines when not on a terminal"
    )
    flush_interval: float = Field(
        1.0, allow_inf_nan=False, gt=0, description="seconds between manifest writes (outcomes are batched)"
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or one JSON object per line")
    status_interval: float = Field(
        5.0,
        allow_inf_nan=False,
        gt=0,
        description="seconds between rewrites of the status file <output>/.sci-fetch/status.json",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve Prometheus metrics on this port; empty means off"
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="address the metrics endpoint listens on (0.0.0.0 for every interface, as the Docker image sets)",
    )

    # Sharding over several machines
    shard_count: int = Field(
        1, ge=1, le=100000, description="split the images into N disjoint shares (by a stable hash of the image id)"
    )
    shard_index: int | None = Field(
        None,
        ge=0,
        description="which share K (0..N-1) this process takes; empty means from JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX",
    )

    # The post-stage ([crops] table, SCI_FETCH_CROPS__<NAME>); last, since TOML tables follow the plain keys
    # The table as given: the crops stage types and checks it (crops.options.crop_options), so settings know no stage.
    crops: dict[str, Any] = Field(default_factory=dict, description="crops and the crop-label CSV")

    # Where each given setting came from ("flag --profile", "env SCI_FETCH_PROFILE", "settings file X"),
    # so a message about a value can say which file or variable to change.
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _config: Path | None = PrivateAttr(None)  # the settings file read, for messages about a section's values

    @field_validator(
        "profile",
        "endpoint_url",
        "key_template",
        "region",
        "limit",
        "max_requests_per_second",
        "manifest",
        "coco",
        "metrics_port",
        "shard_index",
        "ca_bundle",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text != "auto" and not (text.isdigit() and 1 <= int(text) <= 256):
            raise ValueError(f"processes must be 'auto' or a whole number from 1 to 256, got {value!r}")
        return text

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"CA bundle {value} is not a file")
        return value

    @field_validator("key_template")
    @classmethod
    def _template_fields(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _anonymous_has_no_profile(self) -> Settings:
        """Anonymous means no credentials at all, whatever a settings file says about the profile."""
        if self.anonymous:
            self.profile = None
        return self

    @model_validator(mode="after")
    def _memory_budget(self) -> Settings:
        """Each download in flight may hold up to chunk_size bytes before they are written, so the product
        is what a run may take; 1 GiB x 4096 would be 4 TiB."""
        held = self.chunk_size * self.concurrency
        if held > MEMORY_BUDGET:
            raise ValueError(
                f"chunk_size x concurrency is {held / (1 << 30):.1f} GiB: every download in flight may hold "
                f"chunk_size bytes in memory, so a run could take that much; keep the product at or below "
                f"{MEMORY_BUDGET >> 30} GiB (a smaller chunk_size: 1 MiB writes at full speed)"
            )
        return self

    @model_validator(mode="after")
    def _delays(self) -> Settings:
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("retry_max_delay must be at least retry_base_delay")
        return self

    @model_validator(mode="after")
    def _shard(self) -> Settings:
        """Resolve the shard index once: a scheduler exports it, but never the count."""
        if self.shard_count == 1:
            self.shard_index = self.shard_index or 0
            if self.shard_index != 0:
                raise ValueError("shard_index must be 0 when shard_count is 1")
            return self
        if self.shard_index is None:
            found = index_from_environment(os.environ)
            if found is None:
                raise ValueError(
                    f"shard_count is {self.shard_count} but no shard index was given: use --shard K/{self.shard_count}, "
                    f"{ENV_PREFIX}SHARD_INDEX, or run as a Kubernetes Indexed Job / AWS Batch array job"
                )
            self.shard_index = found[0]
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard index {self.shard_index} is outside 0..{self.shard_count - 1}")
        return self

    @property
    def shard_suffix(self) -> str:
        return layout.shard_suffix(self.shard_index, self.shard_count)

    @property
    def manifest_path(self) -> Path:
        return self.manifest or layout.manifest_path(self.output, self.shard_suffix)

    @property
    def state_dir(self) -> Path:
        return self.manifest_path.parent

    def state_file(self, stem: str, ext: str) -> Path:
        """A per-shard file beside the manifest: failures.csv, status.json, ..."""
        return layout.state_file(self.state_dir, (stem, ext), self.shard_suffix)

    def source_of(self, name: str) -> str:
        """Where a setting's value came from, for messages: a flag, a variable, a file, or the default."""
        return self._sources.get(name, "the built-in default")

    def check_profile(self) -> None:
        """Fail before any work when the AWS profile does not exist, naming where it was set."""
        if self.anonymous or not self.profile:
            return
        import botocore.session  # here: only a run that uses a profile pays for it

        if self.profile in botocore.session.Session().available_profiles:
            return
        raise UsageError(
            f"AWS profile {self.profile!r} (from {self.source_of('profile')}) not found in ~/.aws/config or "
            "~/.aws/credentials; set 'profile' to an existing profile, to \"\" for environment credentials, "
            "or use --anonymous for a public bucket"
        )

    def section_error(self, exc: ValidationError, section: str) -> UsageError:
        """A stage's options built from ``[section]`` were wrong: one line each, naming flag, variable and file."""
        return UsageError(_one_line(exc, self._config, (section,)))

    def storage_options(self) -> StorageOptions:
        return StorageOptions(
            bucket=self.bucket,
            region=self.region,
            profile=self.profile,
            endpoint_url=self.endpoint_url,
            anonymous=self.anonymous,
            pool_size=self.concurrency,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_attempts=self.max_attempts,
            retry_base_delay=self.retry_base_delay,
            retry_max_delay=self.retry_max_delay,
            max_requests_per_second=self.max_requests_per_second,
            chunk_size=self.chunk_size,
            outage_limit=self.outage_limit,
            ca_bundle=self.ca_bundle,
            direct_get=self.direct_get,
            speed_limit=self.speed_limit,
            speed_time=self.speed_time,
        )


def config_path(explicit: Path | None) -> Path | None:
    """Which settings.toml to read: --config, else $SCI_FETCH_CONFIG, else ./settings.toml if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"settings file {explicit} does not exist")
        return explicit
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise UsageError(f"settings file {path} (from {ENV_PREFIX}CONFIG) does not exist")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _one_line(exc: ValidationError, config: Path | None, section: tuple[str, ...] = ()) -> str:
    lines = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across several settings
            lines.append(f"settings{''.join(f' [{name}]' for name in section)}: {message}")
            continue
        parts = [*section, *(str(p) for p in err["loc"])]
        name = ".".join(parts)
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        origin = f"flag --{parts[-1].replace('_', '-')}, env {ENV_PREFIX}{'__'.join(parts).upper()}" + (
            f" or {config}" if config else ""
        )
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown setting '{name}' (from {origin}); see settings.toml for the known ones")
        else:
            lines.append(f"setting '{name}': {message}{got_text} (from {origin})")
    return "\n".join(lines)


def load_settings(
    config: Path | None = None, overrides: dict[str, Any] | None = None, use_files: bool = True
) -> Settings:
    """Build Settings with the documented precedence; ``overrides`` are the CLI flags that were given."""
    toml = config_path(config) if use_files else None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
            return tuple(sources)

    try:
        layered = _Layered(**given)
    except ValidationError as exc:
        raise UsageError(_one_line(exc, toml)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"settings file {toml} is not valid TOML: {exc}") from exc
    except SettingsError as exc:  # e.g. an environment value that should be JSON and is not
        raise UsageError(f"{exc}; check the {ENV_PREFIX}* variables") from exc
    settings = Settings.model_construct(**dict(layered))  # a plain Settings, nested models kept as models
    settings._sources = _sources(given, toml)
    settings._config = toml
    return settings


def _sources(given: dict[str, Any], toml: Path | None) -> dict[str, str]:
    """Which layer gave each top-level setting (the highest one that has it)."""
    found: dict[str, str] = {}
    if toml is not None:
        try:
            with open(toml, "rb") as fh:
                for name in tomllib.load(fh):
                    found[name] = f"settings file {toml}"
        except (OSError, tomllib.TOMLDecodeError):
            pass  # already read once by the settings source; nothing to add here
    for name in Settings.model_fields:
        if ENV_PREFIX + name.upper() in os.environ:
            found[name] = f"env {ENV_PREFIX}{name.upper()}"
    for name in given:
        found[name] = f"flag --{name.replace('_', '-')}"
    return found
