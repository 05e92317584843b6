"""The storage a run uses unless it is given another: S3, imported only when a run opens it (aioboto3 and
botocore cost every command their import time)."""

from __future__ import annotations

from functools import partial

from sci_fetch.storage.base import Storage, StorageFactory
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.rate import SharedRate


def s3_storage(options: StorageOptions, rate: SharedRate | None = None) -> Storage:
    """The default StorageFactory; a module-level function, so it pickles into the children of --processes."""
    from sci_fetch.storage.s3 import S3Storage

    return S3Storage(options, rate=rate)


def for_processes(factory: StorageFactory, count: int, ceiling: float | None) -> StorageFactory:
    """The factory the children of one ``--processes N`` run share: S3 with ONE adaptive request rate in shared
    memory (created here, by the run owner, so it pickles into each spawned child); any other factory as is."""
    if factory is s3_storage:
        return partial(s3_storage, rate=SharedRate(count, ceiling))
    return factory
