import pytest

from sci_fetch.errors import UsageError
from sci_fetch.keys.shard import index_from_environment, parse_shard, shard_of
from sci_fetch.settings import load_settings


def test_shard_of_is_stable_and_spreads_evenly():
    # Fixed values: a change here would re-shard every running job.
    assert [shard_of(f"sci:{i:032x}", 4) for i in range(8)] == [0, 2, 1, 1, 0, 0, 0, 2]
    assert shard_of("sci_demo:93d7cd6ce8ca79f85dcee05872e8059d", 4) == 0
    assert shard_of("sci_demo:93d7cd6ce8ca79f85dcee05872e8059d", 7) == 0
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"p:{i}", 4)] += 1
    assert all(900 < c < 1100 for c in counts), counts


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_index_from_scheduler_variables():
    assert index_from_environment({"JOB_COMPLETION_INDEX": "2"}) == (2, "JOB_COMPLETION_INDEX")
    assert index_from_environment({"AWS_BATCH_JOB_ARRAY_INDEX": "5"}) == (5, "AWS_BATCH_JOB_ARRAY_INDEX")
    assert index_from_environment({}) is None
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX"):
        index_from_environment({"JOB_COMPLETION_INDEX": "x"})


def test_settings_take_the_index_from_the_scheduler(monkeypatch):
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "3")
    s = load_settings(use_files=False, overrides={"shard_count": 8})
    assert s.shard_index == 3 and s.manifest_path.name == "manifest-shard-3-of-8.sqlite"
    assert s.state_file("failures", "csv").name == "failures-shard-3-of-8.csv"


def test_settings_without_an_index_say_how_to_give_one():
    with pytest.raises(UsageError, match="--shard K/4"):
        load_settings(use_files=False, overrides={"shard_count": 4})
    with pytest.raises(UsageError, match="outside 0..3"):
        load_settings(use_files=False, overrides={"shard_count": 4, "shard_index": 4})


def test_one_shard_keeps_the_plain_names():
    s = load_settings(use_files=False)
    assert s.shard_index == 0 and s.manifest_path.name == "manifest.sqlite"
