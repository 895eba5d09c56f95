"""The workspace store's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import BaseSettings, SettingsError

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class StoreSettings(BaseSettings):
    data_dir: str = "./ferry-workspaces"  # one directory per namespace and integration below
    chunk_bytes: int = 256 * 1024  # bytes per chunk of an export
    transfer_window: int = 8  # chunks in flight per transfer
    transfer_idle_timeout: float = 30.0  # seconds to wait for the next chunk of an import
    max_transfer_bytes: int = 256 * MIB  # the most one import may carry (as sent)
    max_workspace_bytes: int = 1024 * MIB  # the largest workspace, uncompressed
    max_transfers: int = 4  # imports and exports served at once, each
    export_gzip_level: int = 1  # fast: the export crosses a LAN first

    def check(self) -> None:
        super().check()
        if not self.data_dir:
            raise SettingsError("FERRY_DATA_DIR: a directory is required")
        if not 0 < self.chunk_bytes * 2 <= self.max_message_bytes:
            raise SettingsError(
                "FERRY_CHUNK_BYTES: must be positive and at most half of FERRY_MAX_MESSAGE_BYTES"
            )
        for name in ("transfer_window", "max_transfers", "max_transfer_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"FERRY_{name.upper()}: must be at least 1")
        if self.transfer_idle_timeout <= 0:
            raise SettingsError("FERRY_TRANSFER_IDLE_TIMEOUT: must be positive")
        if not 0 <= self.export_gzip_level <= 9:
            raise SettingsError("FERRY_EXPORT_GZIP_LEVEL: 0 to 9")
