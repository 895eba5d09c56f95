"""Models on disk: `<data_dir>/<namespace>/<integration_id>/<model_id>.<part>`.

Every path comes from ids that HumanFirst sends, so no path is built from a string:
`shared.confined.ConfinedDirectory` checks each id and reaches every file without ever
following a link, and writes atomically (see there).

A model is three files: `.meta.json` (what `GetModel` shows, the training status), `.data`
(the training data as received, kept until the training succeeded, so a training whose
worker died starts again from it) and `.head.npz` (the trained classifier).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

from shared.confined import ConfinedDirectory, StagedFile, check_name
from shared.faults import FailedPrecondition

# -- the model files ---------------------------------------------------------------------

META = ".meta.json"
DATA = ".data"
HEAD = ".head.npz"


class IntentRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    name: str  # as reported in matches: "Parent / Child" unless hierarchy names are off
    parent_id: str | None = None


class ModelRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """What is kept of a model beside its classifier's weights."""

    id: str
    display_name: str = ""
    status: str = "TRAINING"  # TRAINING | READY | FAILED
    task_id: str | None = None
    error: str | None = None
    gzip: bool = False  # the stored training data is gzip-compressed
    hierarchy_names: bool = True
    hierarchical_delimiter: str = ""
    intents: list[IntentRecord] = []
    examples: int = 0
    embedding_model: str = ""
    created_at: str = ""
    trained_at: str | None = None


@dataclass(frozen=True)
class ModelKey:
    namespace: str
    integration_id: str
    model_id: str

    def __post_init__(self) -> None:
        check_name("namespace", self.namespace)
        check_name("integration_id", self.integration_id)
        check_name("model_id", self.model_id)

    @property
    def scope(self) -> tuple[str, str]:
        return (self.namespace, self.integration_id)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.integration_id}/{self.model_id}"


class ModelFiles:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.directory = ConfinedDirectory(root)

    def open(self) -> None:
        self.directory.open()

    def close(self) -> None:
        self.directory.close()

    def model_ids(self, namespace: str, integration_id: str) -> list[str]:
        names = self.directory.names((namespace, integration_id))
        return [n[: -len(META)] for n in names if n.endswith(META)]

    def read_record(self, key: ModelKey) -> ModelRecord | None:
        raw = self.directory.read(key.scope, key.model_id + META)
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=ModelRecord)
        except msgspec.DecodeError as exc:
            raise FailedPrecondition(f"the record of model {key} is damaged: {exc}") from None

    def write_record(self, key: ModelKey, record: ModelRecord) -> None:
        self.directory.write(key.scope, key.model_id + META, msgspec.json.encode(record))

    def read_data(self, key: ModelKey) -> bytes | None:
        return self.directory.read(key.scope, key.model_id + DATA)

    def write_data(self, key: ModelKey, data: bytes) -> None:
        self.directory.write(key.scope, key.model_id + DATA, data)

    def commit_data(self, key: ModelKey, staged: StagedFile) -> None:
        self.directory.commit(staged, key.scope, key.model_id + DATA)

    def remove_data(self, key: ModelKey) -> None:
        self.directory.remove(key.scope, key.model_id + DATA)

    def read_head(self, key: ModelKey) -> bytes | None:
        return self.directory.read(key.scope, key.model_id + HEAD)

    def write_head(self, key: ModelKey, data: bytes) -> None:
        self.directory.write(key.scope, key.model_id + HEAD, data)

    def remove(self, key: ModelKey) -> bool:
        """Remove every file of the model, its record last (so a crash midway leaves a
        record to delete again); False when there was no such model."""
        self.directory.remove(key.scope, key.model_id + HEAD)
        self.directory.remove(key.scope, key.model_id + DATA)
        return self.directory.remove(key.scope, key.model_id + META)
