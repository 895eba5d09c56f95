"""Models on disk: `<data_dir>/<namespace>/<integration_id>/<model_id>.<part>`.

Every path comes from ids that HumanFirst sends, so no path is built from a string:
`ConfinedDirectory` checks each id (`check_id`: no separators, no `.`/`..`, no NUL, bounded
length) and reaches every file by walking directory descriptors from the data directory's
own with `O_NOFOLLOW`, so a symbolic link planted below it is refused, never followed, and
nothing is read or written outside it. Writes are atomic: a temporary file in `.staging/`
(same file system), fsync'ed, renamed into place, the directory fsync'ed.

`ConfinedDirectory` knows nothing of models: it is written to move to `shared/` as the one
safe-path store (the workspace store's `files.py` does the same walk for its own layout).

A model is three files: `.meta.json` (what `GetModel` shows, the training status), `.data`
(the training data as received, kept until the training succeeded, so a training whose
worker died starts again from it) and `.head.npz` (the trained classifier).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from shared.contracts.workspaces import check_id
from shared.faults import FailedPrecondition, InvalidArgument

STAGING = ".staging"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(kind: str, value: str) -> str:
    """`check_id` for any kind of id: its rules, and the kind named in its message."""
    try:
        return check_id("workspace_id", value)
    except InvalidArgument as exc:
        raise InvalidArgument(str(exc).replace("workspace_id", kind, 1)) from None


class UnsafePath(FailedPrecondition):
    """Something in the data directory is not what Ferry put there (a symbolic link)."""


@dataclass
class StagedFile:
    name: str  # in the staging directory
    handle: BinaryIO


class ConfinedDirectory:
    """Files named by checked ids, below one data directory, never outside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_fd: int | None = None
        self._staging_fd: int | None = None

    def open(self) -> None:
        """Open the data directory (created if missing) and clear leftover staging files.
        The data directory itself may be a link an operator made: it is resolved once."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_fd = os.open(self.root.resolve(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._staging_fd = self._subdirectory(self._root_fd, STAGING, create=True)
        for name in os.listdir(self._staging_fd):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._staging_fd)

    def close(self) -> None:
        for fd in (self._staging_fd, self._root_fd):
            if fd is not None:
                os.close(fd)
        self._root_fd = self._staging_fd = None

    def _fd(self, fd: int | None) -> int:
        if fd is None:
            raise RuntimeError("open() the directory first")
        return fd

    def _subdirectory(self, parent: int, name: str, *, create: bool) -> int:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o750, dir_fd=parent)
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(f"{name!r} in the data directory is not a directory") from None
            raise

    @contextlib.contextmanager
    def directory(self, path: tuple[str, ...], *, create: bool) -> Iterator[int | None]:
        """The descriptor of the directory at `path` (ids, checked); None if it is absent."""
        for depth, part in enumerate(path):
            check_name(f"path component {depth + 1}", part)
        opened: list[int] = []
        try:
            fd = self._fd(self._root_fd)
            try:
                for part in path:
                    fd = self._subdirectory(fd, part, create=create)
                    opened.append(fd)
            except FileNotFoundError:
                yield None
                return
            yield fd
        finally:
            for each in opened:
                os.close(each)

    def names(self, path: tuple[str, ...]) -> list[str]:
        """The regular files in `path`, sorted."""
        with self.directory(path, create=False) as fd:
            if fd is None:
                return []
            found = []
            for name in os.listdir(fd):
                if name.startswith("."):
                    continue
                if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    found.append(name)
            return sorted(found)

    def read(self, path: tuple[str, ...], name: str) -> bytes | None:
        """The file's bytes; None when there is no such file."""
        check_name("file name", name)
        with self.directory(path, create=False) as fd:
            if fd is None:
                return None
            try:
                raw = os.open(name, _READ_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePath(f"{name!r} is a symbolic link; refused") from None
                raise
            with os.fdopen(raw, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise UnsafePath(f"{name!r} is not a regular file")
                return handle.read()

    def write(self, path: tuple[str, ...], name: str, data: bytes) -> None:
        """Put `data` in place of file `name`, atomically."""
        with self.stage() as staged:
            staged.handle.write(data)
            self.commit(staged, path, name)

    @contextlib.contextmanager
    def stage(self) -> Iterator[StagedFile]:
        """A new file in the staging directory, to be written and then `commit`ted; it is
        removed if it was not."""
        staging = self._fd(self._staging_fd)
        temp = f"{uuid.uuid4().hex}.tmp"
        raw = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o640,
            dir_fd=staging,
        )
        staged = StagedFile(temp, os.fdopen(raw, "wb"))
        try:
            yield staged
        finally:
            if not staged.handle.closed:
                staged.handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=staging)

    def commit(self, staged: StagedFile, path: tuple[str, ...], name: str) -> None:
        """Put the staged file in place of file `name`: fsync, rename, fsync the directory."""
        check_name("file name", name)
        staged.handle.flush()
        os.fsync(staged.handle.fileno())
        staged.handle.close()
        with self.directory(path, create=True) as fd:
            assert fd is not None
            os.rename(staged.name, name, src_dir_fd=self._fd(self._staging_fd), dst_dir_fd=fd)
            os.fsync(fd)

    def remove(self, path: tuple[str, ...], name: str) -> bool:
        """Remove file `name`; False when there was none."""
        check_name("file name", name)
        with self.directory(path, create=False) as fd:
            if fd is None:
                return False
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return False
            os.fsync(fd)
            return True


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
