"""The model service's settings, beside the common ones (`FERRY_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.nlu_models.embedding import RUNTIMES
from shared.settings import BaseSettings, SettingsError


@dataclass(frozen=True, kw_only=True)
class ModelSettings(BaseSettings):
    data_dir: str = "./ferry-models"  # one directory per namespace and integration below
    max_training_bytes: int = 256 * 1024 * 1024  # the most one TrainModel may carry (as sent)
    transfer_window: int = 8  # chunks in flight while training data arrives
    transfer_idle_timeout: float = 30.0  # seconds to wait for the next chunk
    # Models whose classifier is held in memory at once; the least recently used is unloaded
    # to make room (it loads again from disk). Discovery's `max_concurrent_models`.
    max_loaded_models: int = 16
    # Examples per Classify and per Embed (Discovery's `model_classification_batch_size`).
    classify_batch_size: int = 256
    match_floor: float = 0.01  # intent matches scoring below this are left out
    train_iterations: int = 300  # gradient steps of the classifier (full batch)
    train_regularization: float = 1e-4  # L2 penalty on the classifier's weights
    # How the encoder runs: int8 (ONNX Runtime, fastest), float32 (ONNX Runtime, the exact
    # embeddings) or numpy (the reference forward pass, no ONNX Runtime needed; slowest).
    embedding_runtime: str = "int8"
    compute_threads: int = 0  # threads of the encoder; 0: one per core

    def check(self) -> None:
        super().check()
        if not self.data_dir:
            raise SettingsError("FERRY_DATA_DIR: a directory is required")
        names = (
            "max_loaded_models",
            "classify_batch_size",
            "train_iterations",
            "max_training_bytes",
            "transfer_window",
        )
        for name in names:
            if getattr(self, name) < 1:
                raise SettingsError(f"FERRY_{name.upper()}: must be at least 1")
        if self.transfer_idle_timeout <= 0:
            raise SettingsError("FERRY_TRANSFER_IDLE_TIMEOUT: must be positive")
        if not 0.0 <= self.match_floor < 1.0:
            raise SettingsError("FERRY_MATCH_FLOOR: must be at least 0 and below 1")
        if self.embedding_runtime not in RUNTIMES:
            raise SettingsError(
                f"FERRY_EMBEDDING_RUNTIME: {self.embedding_runtime!r} is not one of"
                f" {', '.join(RUNTIMES)}"
            )
        if self.compute_threads < 0:
            raise SettingsError("FERRY_COMPUTE_THREADS: must not be negative")
        if self.train_regularization < 0:
            raise SettingsError("FERRY_TRAIN_REGULARIZATION: must not be negative")
