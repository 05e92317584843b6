"""The manifest's rows and the decisions taken from them, typed at the boundary."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict

from sci_fetch.keys.mapping import Task


class State(str, Enum):
    pending = "pending"
    done = "done"
    failed = "failed"
    missing = "missing"
    forbidden = "forbidden"  # 403 AccessDenied for this key after others succeeded: "missing, or no permission"


class ManifestRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_id: str
    key: str
    dest: str
    state: State
    bytes: int | None = None
    md5: str | None = None
    etag: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    checks: str | None = None  # what the bytes were verified against: "size,etag,id-md5"


class Action(str, Enum):
    fetch = "fetch"  # new, pending, failed, or done but the file is gone or changed
    adopt = "adopt"  # a file is already at the destination with no done row: verify before fetching
    skip_done = "skip_done"  # done and the file is on disk with its recorded size: no request at all
    skip_missing = "skip_missing"  # 404 in an earlier run; retried only with --retry-missing
    duplicate_id = "duplicate_id"
    duplicate_dest = "duplicate_dest"
    queued = "queued"  # handed out earlier in this run by the manifest's feed (Manifest.claim): already counted


@dataclass(frozen=True, slots=True)
class Decision:
    """Internal, one per image per run: a dataclass, as cheap to make as the Task it wraps."""

    task: Task
    action: Action
    other: str | None = None  # for duplicates: the image id that already holds the id or destination


class Outcome(BaseModel):
    """What one worker learned about one image; the manifest applies these in batches."""

    model_config = ConfigDict(frozen=True)

    image_id: str
    state: State
    bytes: int | None = None
    md5: str | None = None
    etag: str | None = None
    attempts: int = 0
    error: str | None = None
    checks: str | None = None
