"""The task tracker's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import BaseSettings, SettingsError


@dataclass(frozen=True, kw_only=True)
class TrackerSettings(BaseSettings):
    database_url: str = field(default="sqlite:///./ferry-tasks.db", metadata={"secret": True})
    table_prefix: str = ""  # keeps several trackers (or test runs) apart in one database
    prefetch: int = 512  # a batch can only be as large as what is in flight
    batch_size: int = 256  # changes per transaction at most
    batch_delay: float = 0.002  # seconds to wait for company when a batch is small
    sweep_interval: float = 30.0  # seconds between sweeps for stalled tasks
    stall_after: float = 300.0  # a live task silent this long gets its command re-published
    give_up_after: float = 3600.0  # ... and this long is marked ERRORED

    def check(self) -> None:
        super().check()
        if not self.database_url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise SettingsError("FERRY_DATABASE_URL: sqlite:///path or postgresql://...")
        if self.batch_size < 1:
            raise SettingsError("FERRY_BATCH_SIZE: must be at least 1")
        if not 0 < self.stall_after < self.give_up_after:
            raise SettingsError("FERRY_STALL_AFTER: must be positive and below FERRY_GIVE_UP_AFTER")
