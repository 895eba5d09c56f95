"""The AIoD uploader's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.settings import BaseSettings, SettingsError


@dataclass(frozen=True, kw_only=True)
class UploaderSettings(BaseSettings):
    http_port: int = 8087  # /healthz, /readyz, /metrics
    # The REST API (`api_server` of the `aiondemand` client) and its version path segment
    # ("v2"; empty for the unversioned "latest" paths).
    aiod_api_url: str = "https://api.aiodp.eu/"
    aiod_api_version: str = "v2"
    # Keycloak (`auth_server`): the token endpoint is `{this}realms/{realm}/protocol/...`.
    aiod_auth_url: str = "https://auth.aiodp.eu/aiod-auth/"
    aiod_realm: str = "aiod"
    aiod_client_id: str = "platform_huggingface"
    aiod_client_secret: str = field(default="", metadata={"secret": True})
    # The platform whose records this uploader writes; its client needs `platform_<this>`.
    aiod_platform: str = "huggingface"
    # Uploads in flight per worker (the prefetch of the upsert queue), each with one call to
    # AIoD at a time, on a connection of its own. An upload also waits for its outcome's
    # batch to be confirmed, so it is in hand for about 100 ms: 64 carry some 600 a second.
    upload_concurrency: int = 64
    # A token is renewed this many seconds before it expires.
    token_refresh_margin: float = 30.0
    # Outcomes of uploads are reported to the tracker in batches gathered for this long.
    report_interval: float = 0.05
    report_batch_size: int = 500
    # Records listed per page when a prune compares the catalogue with a listing.
    prune_page_size: int = 1000
    prune_concurrency: int = 8  # deletions in flight during a prune

    def check(self) -> None:
        super().check()
        for name in ("aiod_api_url", "aiod_auth_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise SettingsError(f"FERRY_{name.upper()}: must start with http:// or https://")
        if not re.fullmatch(r"[a-z0-9_]{1,64}", self.aiod_platform):
            raise SettingsError(
                "FERRY_AIOD_PLATFORM: a registered AIoD platform name (lower case, e.g."
                " huggingface)"
            )
        if not self.aiod_client_id:
            raise SettingsError("FERRY_AIOD_CLIENT_ID: the Keycloak client id is required")
        if self.upload_concurrency < 1:
            raise SettingsError("FERRY_UPLOAD_CONCURRENCY: must be at least 1")
        if not 1 <= self.prune_page_size <= 1000:
            raise SettingsError("FERRY_PRUNE_PAGE_SIZE: from 1 to 1000 (AIoD's maximum)")
        for name in ("token_refresh_margin", "report_interval"):
            if getattr(self, name) < 0:
                raise SettingsError(f"FERRY_{name.upper()}: must not be negative")
        if self.report_batch_size < 1 or self.prune_concurrency < 1:
            raise SettingsError("FERRY_REPORT_BATCH_SIZE / FERRY_PRUNE_CONCURRENCY: at least 1")

    @property
    def api_root(self) -> str:
        """The base of every dataset path: `{api}/v2/` (or `{api}/` unversioned)."""
        base = self.aiod_api_url.rstrip("/") + "/"
        return base + (self.aiod_api_version.strip("/") + "/" if self.aiod_api_version else "")

    @property
    def token_url(self) -> str:
        base = self.aiod_auth_url.rstrip("/") + "/"
        return f"{base}realms/{self.aiod_realm}/protocol/openid-connect/token"
