"""Workspaces on disk: `<data_dir>/<namespace>/<integration_id>/<workspace_id>.json`.

Every path comes from ids that HumanFirst (or an operator) sends, so nothing here builds
a path from a string: each id is checked (`check_id`: no separators, no `..`, no NUL,
bounded length), and every file is reached by walking directory descriptors from the data
directory's own, one component at a time, with `O_NOFOLLOW`. A symbolic link planted
anywhere below the data directory is refused, never followed, so nothing is ever read or
written outside it.

Writes are atomic: a temporary file in `.staging/` (same file system), fsync'ed, then
renamed over the workspace and the directory fsync'ed; a reader sees the old workspace or
the new one, never half of one. A crash leaves at most a staging file, removed at start.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shared.confined import ConfinedDirectory, opened_regular
from shared.contracts.workspaces import check_id
from shared.faults import AlreadyExists, NotFound

SUFFIX = ".json"


@dataclass(frozen=True)
class WorkspaceKey:
    namespace: str
    integration_id: str
    workspace_id: str

    def __post_init__(self) -> None:
        check_id("namespace", self.namespace)
        check_id("integration_id", self.integration_id)
        check_id("workspace_id", self.workspace_id)

    @property
    def file_name(self) -> str:
        return self.workspace_id + SUFFIX

    def __str__(self) -> str:
        return f"{self.namespace}/{self.integration_id}/{self.workspace_id}"


class StagedFile:
    """A temporary file in the staging directory, to be committed or discarded."""

    def __init__(self, files: WorkspaceFiles, name: str, handle: BinaryIO) -> None:
        self.files = files
        self.name = name
        self.handle = handle

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.files.staging_fd)

    def sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())


class WorkspaceFiles:
    """The workspace layout on a `ConfinedDirectory` (which opens the data directory and
    walks it without following links)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._directory = ConfinedDirectory(root)

    def open(self) -> None:
        """Open the data directory (created if missing) and clear leftover staging files."""
        self._directory.open()

    def close(self) -> None:
        self._directory.close()

    @property
    def root_fd(self) -> int:
        return self._directory.root_fd

    @property
    def staging_fd(self) -> int:
        return self._directory.staging_fd

    def _subdirectory(self, parent: int, name: str, *, create: bool) -> int:
        return self._directory.subdirectory(parent, name, create=create)

    @contextlib.contextmanager
    def _integration_dir(
        self, namespace: str, integration_id: str, *, create: bool
    ) -> Iterator[int | None]:
        """The directory of one integration's workspaces; None when it does not exist."""
        check_id("namespace", namespace)
        check_id("integration_id", integration_id)
        opened: list[int] = []
        try:
            try:
                ns_fd = self._subdirectory(self.root_fd, namespace, create=create)
                opened.append(ns_fd)
                opened.append(self._subdirectory(ns_fd, integration_id, create=create))
            except FileNotFoundError:
                yield None
                return
            yield opened[-1]
        finally:
            for fd in opened:
                os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def list_ids(self, namespace: str, integration_id: str) -> list[str]:
        with self._integration_dir(namespace, integration_id, create=False) as fd:
            if fd is None:
                return []
            found = []
            for name in os.listdir(fd):
                if not name.endswith(SUFFIX) or name.startswith("."):
                    continue
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    found.append(name[: -len(SUFFIX)])
            return sorted(found)

    def exists(self, key: WorkspaceKey) -> bool:
        with self._integration_dir(key.namespace, key.integration_id, create=False) as fd:
            if fd is None:
                return False
            try:
                info = os.stat(key.file_name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            return stat.S_ISREG(info.st_mode)

    @contextlib.contextmanager
    def open_workspace(self, key: WorkspaceKey) -> Iterator[BinaryIO]:
        """The workspace's file, open for reading; `NotFound` when there is none."""
        with self._integration_dir(key.namespace, key.integration_id, create=False) as fd:
            if fd is None:
                raise NotFound(f"no workspace {key}")
            with opened_regular(fd, key.file_name, f"workspace {key}") as handle:
                if handle is None:
                    raise NotFound(f"no workspace {key}")
                yield handle

    # -- writing -------------------------------------------------------------------------

    def stage(self) -> StagedFile:
        name = f"{uuid.uuid4().hex}.tmp"
        raw = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o640,
            dir_fd=self.staging_fd,
        )
        return StagedFile(self, name, os.fdopen(raw, "wb"))

    def commit(self, staged: StagedFile, key: WorkspaceKey, *, replace: bool) -> None:
        """Put the staged file in place of workspace `key` atomically. `replace=False`:
        only if there is no such workspace yet (`AlreadyExists` otherwise)."""
        staged.sync()
        staged.handle.close()
        try:
            with self._integration_dir(key.namespace, key.integration_id, create=True) as fd:
                assert fd is not None
                if replace:
                    os.rename(staged.name, key.file_name, src_dir_fd=self.staging_fd, dst_dir_fd=fd)
                else:
                    # link() fails when the name exists: create-if-absent, atomically.
                    try:
                        os.link(
                            staged.name, key.file_name, src_dir_fd=self.staging_fd, dst_dir_fd=fd
                        )
                    except FileExistsError:
                        raise AlreadyExists(f"workspace {key} already exists") from None
                os.fsync(fd)
        finally:
            staged.discard()
