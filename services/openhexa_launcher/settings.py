"""The OpenHexa launcher's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import BaseSettings, SettingsError


@dataclass(frozen=True, kw_only=True)
class LauncherSettings(BaseSettings):
    http_port: int = 8084  # /healthz, /readyz, /metrics
    # The server's base URL; the client posts to `{openhexa_url}/graphql/`.
    openhexa_url: str = "http://127.0.0.1:9103"
    openhexa_token: str = field(default="", metadata={"secret": True})  # a workspace token
    openhexa_workspace: str = "ferry"  # the workspace slug
    # The parameter a pipeline declares to receive the task id: injected only where it is
    # declared, and what finds the run of a task after a crash.
    task_id_parameter: str = "task_id"
    page_size: int = 100  # pipelines and runs per GraphQL page
    poll_interval: float = 5.0  # seconds between looks at a young run
    poll_max_interval: float = 60.0  # ... and at an old one
    poll_backoff: float = 0.1  # the interval grows to this share of the run's age
    max_run_duration: float = 14_400.0  # seconds; then the run is stopped and the task ERRORED
    runs_limit_delay: float = 30.0  # first wait for a free run slot, then doubling
    runs_limit_max_delay: float = 600.0
    # How far back to look for a run a crashed launch may have started (clock skew).
    launch_lookback: float = 120.0

    def check(self) -> None:
        super().check()
        if not self.openhexa_url.startswith(("http://", "https://")):
            raise SettingsError("FERRY_OPENHEXA_URL: must start with http:// or https://")
        if not self.openhexa_workspace:
            raise SettingsError("FERRY_OPENHEXA_WORKSPACE: the workspace slug is required")
        if not 1 <= self.page_size <= 10_000:
            raise SettingsError("FERRY_PAGE_SIZE: from 1 to 10000 (OpenHexa's maximum)")
        for name in ("poll_interval", "poll_max_interval", "max_run_duration", "runs_limit_delay"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"FERRY_{name.upper()}: must be positive")
        if self.poll_backoff < 0:
            raise SettingsError("FERRY_POLL_BACKOFF: must not be negative")
        if self.poll_max_interval < self.poll_interval:
            raise SettingsError("FERRY_POLL_MAX_INTERVAL: must be at least FERRY_POLL_INTERVAL")
        if self.runs_limit_max_delay < self.runs_limit_delay:
            raise SettingsError(
                "FERRY_RUNS_LIMIT_MAX_DELAY: must be at least FERRY_RUNS_LIMIT_DELAY"
            )
