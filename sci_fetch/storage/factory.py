"""The storage a run uses unless it is given another: S3, imported only when a run opens it (aioboto3 and
botocore cost every command their import time)."""

from __future__ import annotations

from sci_fetch.storage.base import Storage
from sci_fetch.storage.options import StorageOptions


def s3_storage(options: StorageOptions) -> Storage:
    """The default StorageFactory; a module-level function, so it pickles into the children of --processes."""
    from sci_fetch.storage.s3 import S3Storage

    return S3Storage(options)
