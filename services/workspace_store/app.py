"""The workspace store: HumanFirst JSON workspaces on disk, one directory per HumanFirst
namespace and integration, served over RabbitMQ request/reply (`workspaces.list`, `.get`,
`.create`, `.import`, `.export`).

Imports and exports carry the workspace as chunks on a private transfer queue
(`shared.chunks`), so a 200 MiB workspace never sits whole in a message or in memory: an
import is written (and gunzipped) to a staging file as its chunks arrive, validated as
HumanFirst JSON, reconciled with the stored workspace (HumanFirst's training data replaces
the stored one; the stored workspace's own metadata and unlabelled examples are kept; see
docs/workspaces.md), and committed atomically once the last chunk and its checksum agree.

Errors come back as error replies that start with their kind (`NotFound:`,
`AlreadyExists:`, `InvalidArgument:`), which the gateway turns into gRPC status codes.
One store serves a data directory (imports of one workspace are serialised in-process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import msgspec

from services.workspace_store import hfjson
from services.workspace_store.files import StagedFile, WorkspaceFiles, WorkspaceKey
from services.workspace_store.settings import StoreSettings
from shared.chunks import (
    ChunkLink,
    TransferFailed,
    TransferLimits,
    receive_chunks,
    send_chunks,
    transfer_queue,
)
from shared.contracts.workspaces import (
    WorkspaceCreate,
    WorkspaceExport,
    WorkspaceExportReply,
    WorkspaceGet,
    WorkspaceImport,
    WorkspaceImportReply,
    WorkspaceInfo,
    WorkspaceList,
    WorkspaceListReply,
    WorkspaceReply,
    check_id,
    slug_of,
)
from shared.faults import Fault, InvalidArgument, NotFound
from shared.retry import PermanentError, describe
from shared.service import Service
from shared.topology import WorkQueue

SERVICE = "workspace_store"
INFLATE_STEP = 1024 * 1024  # bytes of output per decompression step (bounds a gzip bomb)


class StoreFailed(PermanentError):
    """The store could not do it (disk full, I/O error). Not retried in place: an import's
    chunks are consumed as they arrive, so only the asker can start it again."""


class Inflater:
    """Writes gunzipped (or plain) bytes to a staging file, refusing more than `limit`."""

    def __init__(self, out: BinaryIO, *, gzip: bool, limit: int) -> None:
        self.out = out
        self.limit = limit
        self.written = 0
        self._gzip = gzip
        self._inflate = zlib.decompressobj(wbits=31) if gzip else None

    def __call__(self, chunk: bytes) -> None:
        if self._inflate is None:
            self._emit(chunk)
            return
        data = chunk
        while data:
            try:
                self._emit(self._inflate.decompress(data, INFLATE_STEP))
                while self._inflate.unconsumed_tail:
                    self._emit(
                        self._inflate.decompress(self._inflate.unconsumed_tail, INFLATE_STEP)
                    )
            except zlib.error as exc:
                raise InvalidArgument(
                    f"the data is not gzip-compressed as its options say ({exc})"
                ) from None
            data = self._inflate.unused_data  # a second gzip member follows
            if data:
                self._inflate = zlib.decompressobj(wbits=31)

    def finish(self) -> None:
        if self._inflate is not None:
            if not self._inflate.eof and (self.written or self._inflate.unconsumed_tail):
                raise InvalidArgument("the gzip data is truncated")
            if not self._inflate.eof:
                raise InvalidArgument("the data is empty or not gzip-compressed")

    def _emit(self, data: bytes) -> None:
        self.written += len(data)
        if self.written > self.limit:
            raise InvalidArgument(f"the workspace is larger than {self.limit} bytes uncompressed")
        self.out.write(data)


class WorkspaceStore:
    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.service = Service(SERVICE, settings, description=__doc__)
        self.log = logging.getLogger("ferry.workspace_store")
        self.files = WorkspaceFiles(settings.data_dir)
        self.link = ChunkLink(settings.amqp_url)
        self._locks: dict[WorkspaceKey, asyncio.Lock] = {}
        self.send_limits = TransferLimits(
            chunk_bytes=settings.chunk_bytes,
            window=settings.transfer_window,
            max_bytes=settings.max_workspace_bytes,
        )
        self.receive_limits = TransferLimits(
            chunk_bytes=settings.max_message_bytes,
            window=settings.transfer_window,
            idle_timeout=settings.transfer_idle_timeout,
            max_bytes=settings.max_transfer_bytes,
        )
        self.service.app.on_startup(self.files.open)
        self.service.app.after_shutdown(self._close)
        self._register()

    async def _close(self) -> None:
        await self.link.close()
        self.files.close()

    def _register(self) -> None:
        service = self.service

        def queue(purpose: str, routing_key: str, prefetch: int | None = None) -> WorkQueue:
            return WorkQueue.request(SERVICE, purpose, routing_key, prefetch=prefetch)

        transfers = self.settings.max_transfers
        service.handles(queue("list", WorkspaceList.ROUTING_KEY), WorkspaceList)(
            self.list_workspaces
        )
        service.handles(queue("get", WorkspaceGet.ROUTING_KEY), WorkspaceGet)(self.get)
        service.handles(queue("create", WorkspaceCreate.ROUTING_KEY), WorkspaceCreate)(self.create)
        service.handles(queue("import", WorkspaceImport.ROUTING_KEY, transfers), WorkspaceImport)(
            self.import_workspace
        )
        service.handles(queue("export", WorkspaceExport.ROUTING_KEY, transfers), WorkspaceExport)(
            self.export_workspace
        )

    # -- queries ---------------------------------------------------------------------------

    async def list_workspaces(self, body: WorkspaceList) -> WorkspaceListReply:
        def read() -> list[WorkspaceInfo]:
            found = []
            for workspace_id in self.files.list_ids(body.namespace, body.integration_id):
                key = WorkspaceKey(body.namespace, body.integration_id, workspace_id)
                try:
                    found.append(self._info(key))
                except Fault as exc:  # one bad file must not hide the others
                    self.log.warning(
                        "workspace skipped", extra={"workspace": str(key), "error": str(exc)}
                    )
            return found

        return WorkspaceListReply(workspaces=await asyncio.to_thread(read))

    async def get(self, body: WorkspaceGet) -> WorkspaceReply:
        key = WorkspaceKey(body.namespace, body.integration_id, body.workspace_id)
        return WorkspaceReply(workspace=await asyncio.to_thread(self._info, key))

    def _info(self, key: WorkspaceKey) -> WorkspaceInfo:
        with self.files.open_workspace(key) as handle, hfjson.mapped(handle) as document:
            found = hfjson.summary(document)
        return WorkspaceInfo(
            id=key.workspace_id, name=found.name or key.workspace_id, description=found.description
        )

    # -- create ----------------------------------------------------------------------------

    async def create(self, body: WorkspaceCreate) -> WorkspaceReply:
        workspace_id = body.workspace_id or slug_of(body.name)
        if not workspace_id:
            raise InvalidArgument("give the workspace an id, or a name with letters or digits")
        check_id("workspace_id", workspace_id)
        key = WorkspaceKey(body.namespace, body.integration_id, workspace_id)
        name = body.name or workspace_id
        document: dict[str, str] = {"name": name}
        if body.description:
            document["description"] = body.description

        def write() -> None:
            staged = self.files.stage()
            try:
                staged.handle.write(msgspec.json.encode(document))
                self.files.commit(staged, key, replace=False)
            finally:
                staged.discard()

        async with self._lock(key):
            await asyncio.to_thread(write)
        self.log.info("workspace created", extra={"workspace": str(key)})
        return WorkspaceReply(
            workspace=WorkspaceInfo(id=workspace_id, name=name, description=body.description)
        )

    # -- import ----------------------------------------------------------------------------

    async def import_workspace(self, body: WorkspaceImport) -> WorkspaceImportReply:
        key = WorkspaceKey(body.namespace, body.integration_id, body.workspace_id)
        if not await asyncio.to_thread(self.files.exists, key):
            raise NotFound(f"no workspace {key} (create it first)")
        queue = transfer_queue(self.service.names, body.transfer_id)
        staged = self.files.stage()
        try:
            inflater = Inflater(
                staged.handle, gzip=body.gzip, limit=self.settings.max_workspace_bytes
            )
            channel = await self.link.channel()
            try:
                await receive_chunks(
                    channel, queue, body.transfer_id, inflater, self.receive_limits
                )
            finally:
                await channel.close()
            inflater.finish()
            staged.sync()
            async with self._lock(key):
                reply = await asyncio.to_thread(self._apply_import, key, staged)
        except (Fault, TransferFailed):
            raise
        except Exception as exc:
            raise StoreFailed(f"the import of {key} failed: {describe(exc)}") from exc
        finally:
            staged.discard()
        reply.size = inflater.written
        self.log.info(
            "workspace imported",
            extra={
                "workspace": str(key),
                "bytes": reply.size,
                "examples": reply.examples,
                "kept_examples": reply.kept_examples,
            },
        )
        return reply

    def _apply_import(self, key: WorkspaceKey, staged: StagedFile) -> WorkspaceImportReply:
        """Validate the received workspace, reconcile it with the stored one, commit."""
        with (
            open(staged.name, "rb", opener=self._staging_opener) as received,
            hfjson.mapped(received) as document,
        ):
            incoming = hfjson.parse(document)
            with self.files.open_workspace(key) as current, hfjson.mapped(current) as existing:
                stored = hfjson.parse(existing, error=hfjson.StoredWorkspaceInvalid)
                result = hfjson.reconcile(incoming, stored)
                merged = None if result.verbatim else self._write_pieces(result.pieces)
                # The views into both mappings go before the mappings do.
                result.pieces.clear()
                del stored, incoming
        reply = WorkspaceImportReply(examples=result.examples, kept_examples=result.kept_examples)
        if merged is None:
            self.files.commit(staged, key, replace=True)
        else:
            try:
                self.files.commit(merged, key, replace=True)
            finally:
                merged.discard()
        return reply

    def _write_pieces(self, pieces: list[bytes | msgspec.Raw]) -> StagedFile:
        merged = self.files.stage()
        try:
            for piece in pieces:
                merged.handle.write(piece)
        except BaseException:
            merged.discard()
            raise
        return merged

    def _staging_opener(self, name: str, flags: int) -> int:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=self.files.staging_fd)

    # -- export ----------------------------------------------------------------------------

    async def export_workspace(self, body: WorkspaceExport) -> WorkspaceExportReply:
        key = WorkspaceKey(body.namespace, body.integration_id, body.workspace_id)
        queue = transfer_queue(self.service.names, body.transfer_id)
        try:
            with self.files.open_workspace(key) as handle:
                channel = await self.link.channel()
                try:
                    pieces = self._read(handle, gzip=body.gzip)
                    sent = await send_chunks(
                        channel, queue, body.transfer_id, pieces, self.send_limits
                    )
                finally:
                    await channel.close()
        except (Fault, TransferFailed):
            raise
        except Exception as exc:
            raise StoreFailed(f"the export of {key} failed: {describe(exc)}") from exc
        self.log.info("workspace exported", extra={"workspace": str(key), "bytes": sent.size})
        return WorkspaceExportReply(chunks=sent.chunks, size=sent.size, sha256=sent.sha256)

    def _read(self, handle: BinaryIO, *, gzip: bool) -> Iterator[bytes]:
        deflate = zlib.compressobj(self.settings.export_gzip_level, wbits=31) if gzip else None
        while piece := handle.read(self.settings.chunk_bytes):
            yield piece if deflate is None else deflate.compress(piece)
        if deflate is not None:
            yield deflate.flush()

    def _lock(self, key: WorkspaceKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


def build(settings: StoreSettings | None = None) -> WorkspaceStore:
    return WorkspaceStore(settings or StoreSettings.from_env())
