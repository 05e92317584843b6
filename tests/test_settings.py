from pathlib import Path
from types import SimpleNamespace

import pytest

from sci_fetch.crops.options import CropOptions, crop_options
from sci_fetch.errors import UsageError
from sci_fetch.keys.mapping import Variant
from sci_fetch.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_without_any_source():
    s = load_settings(use_files=False)
    assert s.concurrency == 64 and s.bucket == "animl-images-serving-prod" and s.region == "us-west-2"
    assert s.profile is None and s.variant is Variant.original and s.grace_seconds == 10
    assert s.manifest_path == Path("images/.sci-fetch/manifest.sqlite")


def test_precedence_flag_over_env_over_file_over_default(tmp_path, monkeypatch):
    toml = tmp_path / "s.toml"
    toml.write_text('concurrency = 8\nbucket = "from-file"\nregion = "eu-west-1"\nmax_attempts = 7\n')
    monkeypatch.setenv("SCI_FETCH_CONCURRENCY", "16")
    monkeypatch.setenv("SCI_FETCH_BUCKET", "from-env")
    s = load_settings(toml, {"concurrency": 32})
    assert s.concurrency == 32  # flag
    assert s.bucket == "from-env"  # env beats file
    assert s.region == "eu-west-1"  # file beats default
    assert s.max_attempts == 7
    assert s.read_timeout == 60.0  # default


def test_settings_toml_in_the_working_dir_is_read(tmp_path):
    (tmp_path / "settings.toml").write_text('profile = "animl"\n')
    assert load_settings().profile == "animl"


def test_config_from_env_variable(tmp_path, monkeypatch):
    other = tmp_path / "other.toml"
    other.write_text("concurrency = 3\n")
    monkeypatch.setenv("SCI_FETCH_CONFIG", str(other))
    assert load_settings().concurrency == 3


def test_shipped_settings_toml_is_valid_and_uses_the_animl_profile():
    s = load_settings(REPO / "settings.toml")
    assert s.profile == "animl" and s.bucket == "animl-images-serving-prod" and s.region == "us-west-2"


def test_shipped_settings_toml_documents_every_option():
    text = (REPO / "settings.toml").read_text()
    for name in Settings.model_fields:
        if name == "crops":
            assert "\n[crops]" in text
            for sub in CropOptions.model_fields:
                assert f"# {sub} =" in text.split("[crops]")[1], f"settings.toml does not document crops.{sub}"
        else:
            assert f"{name} =" in text.split("[crops]")[0], f"settings.toml does not document {name}"


@pytest.mark.parametrize(
    "overrides,env,needle",
    [
        ({"concurrency": 0}, {}, "setting 'concurrency'"),
        ({}, {"SCI_FETCH_CONCURRENCY": "many"}, "setting 'concurrency'"),
        ({"variant": "large"}, {}, "setting 'variant'"),
        ({"endpoint_url": "127.0.0.1:8333"}, {}, "must start with http"),
        ({"key_template": "x/{nope}"}, {}, "{nope}"),
        ({"bucket": "ab"}, {}, "setting 'bucket'"),
    ],
)
def test_wrong_values_get_one_line_naming_the_setting(overrides, env, needle, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UsageError) as info:
        load_settings(use_files=False, overrides=overrides)
    assert needle in str(info.value) and len(str(info.value).splitlines()) == 1


def test_unknown_key_in_file_is_named(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text("concurrancy = 3\n")
    with pytest.raises(UsageError, match="unknown setting 'concurrancy'"):
        load_settings(toml)


def test_broken_toml_is_named(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text("concurrency = = 3\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_settings(toml)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_empty_profile_means_environment_credentials():
    assert load_settings(use_files=False, overrides={"profile": ""}).profile is None


def test_crop_settings_nest_under_crops_with_the_same_precedence(tmp_path, monkeypatch):
    toml = tmp_path / "s.toml"
    toml.write_text('concurrency = 4\n[crops]\npadding = 0.1\nsquare = true\nexclude = ["empty", "person"]\n')
    monkeypatch.setenv("SCI_FETCH_CROPS__PADDING", "0.2")
    monkeypatch.setenv("SCI_FETCH_CROPS__KEEP", "fox,skunk")
    settings = load_settings(toml, {"crops": {"jpeg_quality": 80}})
    s = SimpleNamespace(crops=crop_options(settings), concurrency=settings.concurrency)
    assert s.crops.padding == 0.2 and s.crops.square is True and s.crops.jpeg_quality == 80
    assert s.crops.exclude == ["empty", "person"] and s.crops.keep == ["fox", "skunk"]
    assert s.concurrency == 4


def test_wrong_crop_setting_names_the_env_variable(monkeypatch):
    monkeypatch.setenv("SCI_FETCH_CROPS__PADDING", "wide")
    with pytest.raises(UsageError, match="SCI_FETCH_CROPS__PADDING"):
        crop_options(load_settings(use_files=False))


# ---- settings that would let one run hang forever or take all memory (issue 21, smaller) -------------


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_outage_limit_must_be_finite(tmp_path, value):
    toml = tmp_path / "s.toml"
    toml.write_text(f"outage_limit = {value}\n")
    with pytest.raises(UsageError, match="setting 'outage_limit': Input should be a finite number"):
        load_settings(toml)


@pytest.mark.parametrize("name", ["read_timeout", "connect_timeout", "grace_seconds", "retry_max_delay"])
def test_time_settings_must_be_finite(name):
    with pytest.raises(UsageError, match=f"setting '{name}': Input should be a finite number"):
        load_settings(overrides={name: float("inf")}, use_files=False)


def test_chunk_size_times_concurrency_is_bounded_by_a_memory_budget():
    with pytest.raises(UsageError) as info:
        load_settings(overrides={"chunk_size": 1 << 30, "concurrency": 4096}, use_files=False)
    message = str(info.value)
    assert "chunk_size x concurrency is 4096.0 GiB" in message and "2 GiB" in message and "memory" in message
    assert "\n" not in message
    ok = load_settings(overrides={"chunk_size": 1 << 20, "concurrency": 2048}, use_files=False)
    assert ok.chunk_size * ok.concurrency == 2 << 30
