"""The gateway's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import BaseSettings, SettingsError

MIB = 1024 * 1024
# HumanFirst sends workspaces of up to 200 MiB (hf-custom-integration sets this limit).
GRPC_MESSAGE_BYTES = 200 * MIB


@dataclass(frozen=True, kw_only=True)
class GatewaySettings(BaseSettings):
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051  # 0: any free port (tests)
    # HumanFirst's `mtls-credentials.json`: this server's pair and the client CA to trust.
    credentials_file: str = "./certs/mtls-credentials.json"
    max_message_bytes_grpc: int = GRPC_MESSAGE_BYTES
    grpc_grace: float = 10.0  # seconds running RPCs get to finish on shutdown
    # Webhooks of the Hugging Face Hub: served when a secret is set (the Hub sends it back
    # in X-Webhook-Secret); port None: no webhook endpoint either way.
    webhook_host: str = "0.0.0.0"
    webhook_port: int | None = 8443  # 0: any free port (tests)
    webhook_secret: str | None = field(default=None, metadata={"secret": True})
    webhook_tls_cert: str | None = None  # PEM files; both or neither (then plain HTTP)
    webhook_tls_key: str | None = None
    webhook_max_body_bytes: int = 256 * 1024
    # Chunked transfers of workspaces to and from the workspace store.
    chunk_bytes: int = 256 * 1024
    transfer_window: int = 8
    transfer_idle_timeout: float = 30.0
    transfer_timeout: float = 300.0  # at most, for one import or export (or the RPC deadline)
    watch_max_seconds: float = 3600.0  # a WatchTask with no deadline ends after this

    def check(self) -> None:
        super().check()
        if not 0 <= self.grpc_port < 65536:
            raise SettingsError(f"FERRY_GRPC_PORT: {self.grpc_port} is not a port")
        if self.webhook_port is not None and not 0 <= self.webhook_port < 65536:
            raise SettingsError(f"FERRY_WEBHOOK_PORT: {self.webhook_port} is not a port")
        if (self.webhook_tls_cert is None) != (self.webhook_tls_key is None):
            raise SettingsError("FERRY_WEBHOOK_TLS_CERT and FERRY_WEBHOOK_TLS_KEY: both or neither")
        if not 0 < self.chunk_bytes * 2 <= self.max_message_bytes:
            raise SettingsError(
                "FERRY_CHUNK_BYTES: must be positive and at most half of FERRY_MAX_MESSAGE_BYTES"
            )
        for name in ("transfer_window", "max_message_bytes_grpc", "webhook_max_body_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"FERRY_{name.upper()}: must be at least 1")
        for name in (
            "transfer_idle_timeout",
            "transfer_timeout",
            "watch_max_seconds",
            "grpc_grace",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"FERRY_{name.upper()}: must be positive")
