"""Which share of the images a shard takes: a stable hash of the image id, the same on every machine.

Python's ``hash()`` is salted per process, so blake2b is used: shard K of N picks the same images in
every container of a Kubernetes Indexed Job or an AWS Batch array job, and the N shares are disjoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

# Schedulers export the index but not the count; the count comes from the settings (shard_count).
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


def shard_of(image_id: str, count: int) -> int:
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def process_of(image_id: str, count: int) -> int:
    """Which of ``count`` processes of one run takes the image: the same hash, salted so that it splits a
    shard's images evenly (shard_of alone would give every image of shard K the same remainder)."""
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8, salt=b"process").digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N), 0 <= K < N; ValueError with the reason otherwise."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= K < N")
    return index, count


def index_from_environment(env: Mapping[str, str]) -> tuple[int, str] | None:
    """The shard index a scheduler gave this container, and the variable it came from."""
    for name in INDEX_VARIABLES:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value), name
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a whole number") from None
    return None


def in_shard(count: int, index: int) -> Callable[[str], bool] | None:
    """Whether an image id is in shard ``index`` of ``count`` (None: not sharded, every image is)."""
    if count <= 1:
        return None
    return lambda image_id: shard_of(image_id, count) == index
