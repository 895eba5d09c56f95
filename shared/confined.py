"""Files named by checked ids below one data directory, never outside it: the one safe-path
store of the services that keep files (the workspace store, the model service).

Every path comes from ids that callers send, so no path is built from a string: each id is
checked (`check_id`: no separators, no `.`/`..`, no NUL, bounded length) and every file is
reached by walking directory descriptors from the data directory's own with `O_NOFOLLOW`,
so a symbolic link planted below it is refused, never followed. Writes are atomic: a
temporary file in `.staging/` (same file system), fsync'ed, renamed into place, the
directory fsync'ed; a crash leaves at most a staging file, removed at the next start.
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


# Something in the data directory is not what Ferry put there (a symbolic link): refused,
# with the status that says the request was fine but the state is not. An alias, not a
# subclass, so that an error reply names it `FailedPrecondition:` and the gateway maps it.
UnsafePath = FailedPrecondition


@dataclass
class StagedFile:
    name: str  # in the staging directory
    handle: BinaryIO


@contextlib.contextmanager
def opened_regular(directory_fd: int, name: str, what: str) -> Iterator[BinaryIO | None]:
    """The regular file `name` of the directory, open for reading and never through a
    link; None when there is no such file. `what` names it in the refusals."""
    try:
        raw = os.open(name, _READ_FLAGS, dir_fd=directory_fd)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{what} is a symbolic link; refused") from None
        raise
    with os.fdopen(raw, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsafePath(f"{what} is not a regular file")
        yield handle


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
        self._staging_fd = self.subdirectory(self._root_fd, STAGING, create=True)
        for name in os.listdir(self._staging_fd):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._staging_fd)

    def close(self) -> None:
        for fd in (self._staging_fd, self._root_fd):
            if fd is not None:
                os.close(fd)
        self._root_fd = self._staging_fd = None

    @property
    def root_fd(self) -> int:
        if self._root_fd is None:
            raise RuntimeError("open() the directory first")
        return self._root_fd

    @property
    def staging_fd(self) -> int:
        if self._staging_fd is None:
            raise RuntimeError("open() the directory first")
        return self._staging_fd

    def subdirectory(self, parent: int, name: str, *, create: bool) -> int:
        """The descriptor of directory `name` in `parent`; never through a link."""
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
            fd = self.root_fd
            try:
                for part in path:
                    fd = self.subdirectory(fd, part, create=create)
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
            with opened_regular(fd, name, repr(name)) as handle:
                return None if handle is None else handle.read()

    def write(self, path: tuple[str, ...], name: str, data: bytes) -> None:
        """Put `data` in place of file `name`, atomically."""
        with self.stage() as staged:
            staged.handle.write(data)
            self.commit(staged, path, name)

    @contextlib.contextmanager
    def stage(self) -> Iterator[StagedFile]:
        """A new file in the staging directory, to be written and then `commit`ted; it is
        removed if it was not."""
        staging = self.staging_fd
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
            os.rename(staged.name, name, src_dir_fd=self.staging_fd, dst_dir_fd=fd)
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
