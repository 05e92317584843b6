"""What the storage layer is told, read once from the settings; it never reads flags itself."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class StorageOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    anonymous: bool = False
    pool_size: int = 64
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    retry_base_delay: float = 0.5
    retry_max_delay: float = 20.0
    max_requests_per_second: float | None = None
    outage_limit: float = 600.0
    chunk_size: int = 1 << 20
    ca_bundle: Path | None = None
    direct_get: bool = True
    speed_limit: float = 1024.0
    speed_time: float = 30.0

    def describe(self) -> str:
        """Where requests go, for error messages: bucket, profile, endpoint; never a secret."""
        who = (
            "anonymous access"
            if self.anonymous
            else f"profile {self.profile!r}"
            if self.profile
            else "the default AWS credential chain"
        )
        where = f" at {self.endpoint_url}" if self.endpoint_url else f" in region {self.region}" if self.region else ""
        return f"bucket {self.bucket!r}{where} with {who}"
