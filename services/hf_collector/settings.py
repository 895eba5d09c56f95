"""The Hugging Face collector's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import BaseSettings, SettingsError


@dataclass(frozen=True, kw_only=True)
class CollectorSettings(BaseSettings):
    http_port: int = 8086  # /healthz, /readyz, /metrics
    hf_endpoint: str = "https://huggingface.co"  # the Hub API (HF_ENDPOINT)
    # The dataset viewer, whose `/parquet?dataset=ID` lists a dataset's parquet files.
    hf_viewer_url: str = "https://datasets-server.huggingface.co"
    hf_token: str = field(default="", metadata={"secret": True})  # empty: anonymous
    page_size: int = 1000  # datasets per listing page (the Hub's maximum)
    # Parquet lookups in flight while a page is read (and connections to the viewer).
    parquet_concurrency: int = 64
    # In-process attempts of each parquet lookup: a page holds up to `page_size` of them,
    # and one that fails for good sends the whole page to be read again later.
    parquet_retry_attempts: int = 8
    prune_max_fraction: float = 0.1  # the share of records a prune may remove without force
    whoami_cache_seconds: float = 300.0  # whoami-v2 is "intentionally strict": cached

    def check(self) -> None:
        super().check()
        for name in ("hf_endpoint", "hf_viewer_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise SettingsError(f"FERRY_{name.upper()}: must start with http:// or https://")
        if not 1 <= self.page_size <= 1000:
            raise SettingsError("FERRY_PAGE_SIZE: from 1 to 1000 (the Hub's maximum)")
        if self.parquet_concurrency < 1 or self.parquet_retry_attempts < 1:
            raise SettingsError(
                "FERRY_PARQUET_CONCURRENCY and FERRY_PARQUET_RETRY_ATTEMPTS: at least 1"
            )
        if not 0 <= self.prune_max_fraction <= 1:
            raise SettingsError("FERRY_PRUNE_MAX_FRACTION: a share from 0 to 1 (0.1 is 10%)")
        if self.whoami_cache_seconds < 0:
            raise SettingsError("FERRY_WHOAMI_CACHE_SECONDS: must not be negative")
