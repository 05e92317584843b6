"""The JSON sci_fetch writes for other programs, typed: status.json, ``status --json``, ``verify --json``,
``plan --json``.

Each is a pydantic model whose fields are the JSON keys, in the order they are printed; the producers
build the model and print ``to_json``. docs/schema/*.json is generated from these models
(``python -m sci_fetch.observe.schema``) and a test fails when the two differ, so a field renamed here
is a schema change someone sees. Value types only, at the bottom of the layers: nothing here imports a stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

# A figure as it was computed: an int stays an int in the JSON (0, not 0.0), a float stays a float.
Number = int | float


class Output(BaseModel):
    """Frozen and closed: a producer that passes a key the schema does not name fails in the tests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def document(self) -> dict[str, Any]:
        """The JSON object: every key, nulls included; optional keys (``exit_code``) only when they were set."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self, indent: int | None = None) -> str:
        """Printed as ``json.dumps`` prints, so the text is what it was before these models."""
        return json.dumps(self.document(), indent=indent)

    def __or__(self, extra: Mapping[str, Any]) -> Self:
        """``snapshot | {"exit_code": 0}``: the same document with more keys set, checked as they are added."""
        return self.model_validate(self.model_dump(exclude_unset=True) | dict(extra))


# ---- status.json ---------------------------------------------------------------------------------


class SnapshotImages(Output):
    total: int | None = Field(description="images the COCO file names (this shard's share); null until counted")
    done: int = Field(description="fetched + adopted + already done")
    fetched: int
    adopted: int = Field(description="files already on disk that checked out, recorded without a request")
    already_done: int = Field(description="done in an earlier run")
    failed: int
    missing: int = Field(description="404 in this run, or in an earlier one and not asked again")
    forbidden: int
    invalid: int = Field(description="records that could not be used")
    duplicates: int
    in_flight: int
    pending: int | None = Field(description="not finished or rejected yet, unread records included; null until counted")


class SnapshotRates(Output):
    images_per_second: Number = Field(description="over the last 30 s")
    bytes_per_second: int = Field(description="over the last 30 s")
    average_images_per_second: Number = Field(description="since the run started")
    average_bytes_per_second: int = Field(description="since the run started")


class StatusSnapshot(Output):
    """status.json: the run's figures, atomically replaced every few seconds and once more at the end."""

    time: float = Field(description="Unix time of the snapshot")
    state: str = Field(description="running, finished, or why the run stopped (SIGINT, SIGTERM, disk, ...)")
    shard: str = Field(description='"K/N", or "" when not sharded')
    images: SnapshotImages
    bytes: int = Field(description="bytes written by this run")
    rates: SnapshotRates
    eta_seconds: int | None = Field(description="null when unknown")
    elapsed_seconds: Number
    requests: int = Field(description="S3 requests sent, retries included")
    unreachable_since: float | None = Field(description="Unix time the current outage began; null when reachable")
    request_rate: float | None = Field(description="the run's adaptive request rate, req/s; null while not limited")
    slowdowns: int = Field(description="throttle answers (SlowDown, 503, 429) this run got")
    retries: dict[str, int] = Field(description="retries by reason")
    last_errors: list[str]
    exit_code: int | None = Field(default=None, description="the run's exit code; only in the last snapshot")
    processes: int | None = Field(default=None, description="with --processes N: N")


# ---- sci-fetch status --json ------------------------------------------------------------------------


class RunRecord(Output):
    """One run as the manifest records it."""

    run_id: int
    started_at: float
    ended_at: float | None = Field(description="null while the run goes on, or when it was killed")
    exit_code: int | None
    summary: dict[str, Any] | None = Field(description="the run's figures when it ended")


class ErrorLine(Output):
    key: str
    state: str
    error: str | None


class StatusReport(Output):
    """``sci-fetch status --json``: every manifest under the output folder, merged."""

    manifests: list[str]
    counts: dict[str, int] = Field(description="images per state: done, pending, failed, missing, forbidden")
    images: int
    bytes_done: int
    images_per_second_last_minute: Number
    bytes_per_second_last_minute: int
    eta_seconds: int | None
    heartbeat_age_seconds: Number | None = Field(description="seconds since the last manifest write")
    running: bool
    last_run: RunRecord | None = Field(description="the last run when there is one manifest, else null")
    last_runs: list[RunRecord | None] = Field(description="the last run of each manifest")
    last_errors: list[ErrorLine]


# ---- sci-fetch verify --json ------------------------------------------------------------------------

ProblemKind = Literal["missing", "size", "md5", "content", "decode"]


class VerifyProblem(Output):
    image_id: str
    destination: str = Field(description="the file, relative to the output folder")
    kind: ProblemKind
    detail: str


class VerifyReport(Output):
    """``sci-fetch verify --json``: what was checked, and every image marked pending."""

    output: str
    manifests: list[str]
    decode: bool
    checked: int
    good: int
    marked_pending: int
    by_kind: dict[str, int]
    seconds: Number
    problems: list[VerifyProblem]


# ---- sci-fetch plan --json --------------------------------------------------------------------------


class PlanReport(Output):
    """``sci-fetch plan --json``: the keys left, what a sample of them says, whether they fit, how long."""

    images: int
    done: int
    known_missing: int
    invalid: int
    remaining: int
    sampled: int
    found: int
    missing: int
    errors: int
    missing_example: str | None
    exact: bool = Field(description="every key left was asked, so the total is not an estimate")
    mean_size: Number | None
    objects: Number | None
    total_bytes: Number | None
    low_bytes: Number | None
    high_bytes: Number | None
    confidence: Number
    folder: str
    free_bytes: int
    fit: Literal["fits", "tight", "exceeds"]
    head_rate: Number | None
    bytes_per_second: Number | None
    eta_seconds: Number | None
    exit_code: int


# The documents docs/schema/ holds, by file name.
SCHEMAS: dict[str, type[Output]] = {
    "status-file.json": StatusSnapshot,
    "status-command.json": StatusReport,
    "verify-command.json": VerifyReport,
    "plan-command.json": PlanReport,
}
