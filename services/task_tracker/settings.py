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
    sweep_page_size: int = 500  # tasks the sweep locks and decides per transaction
    orphan_ttl: float = 86_400.0  # a task never submitted is deleted after this long silent
    outbox_interval: float = 5.0  # seconds between passes over unpublished follow-ups
    store_timeout: float = 10.0  # seconds: every PostgreSQL statement, and connecting
    store_retry_max_delay: float = 5.0  # backoff cap while the store is unavailable

    def check(self) -> None:
        super().check()
        if not self.database_url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise SettingsError("FERRY_DATABASE_URL: sqlite:///path or postgresql://...")
        if self.batch_size < 1:
            raise SettingsError("FERRY_BATCH_SIZE: must be at least 1")
        if self.sweep_page_size < 1:
            raise SettingsError("FERRY_SWEEP_PAGE_SIZE: must be at least 1")
        if self.orphan_ttl <= 0:
            raise SettingsError("FERRY_ORPHAN_TTL: must be a positive number of seconds")
        if self.store_timeout <= 0:
            raise SettingsError("FERRY_STORE_TIMEOUT: must be a positive number of seconds")
        if not 0 < self.stall_after < self.give_up_after:
            raise SettingsError("FERRY_STALL_AFTER: must be positive and below FERRY_GIVE_UP_AFTER")
