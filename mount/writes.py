"""The mount's write path: files open for writing, staged until close.

One `OpenWrite` per inode is shared by all of that file's handles. Until the last
handle is released it is the authority for the file's name, size and bytes, so
readers of the open file see what was written and a rename before close keeps its
effect. A clean file gets a staging copy of its blob on its first change
(copy-on-write); flush and fsync finalize the staging file through the one ingest
path, so a close() that returned 0 means stored and registered (law 6).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

import pyfuse3
import trio

from casfs.blobstore import StagingFile
from casfs.ingest import guess_content_type, place_blob, register_placed
from casfs.records import Document, NewDocument
from casfs.store import Store

from .catalog_writer import CatalogWriter

log = logging.getLogger("casfs.mount")


@dataclass
class OpenWrite:
    ino: int
    parent_ino: int
    name: str
    document: Document | None  # the last registered version, None for a new file
    staging: StagingFile | None = None  # bytes not yet finalized, None when clean
    open_handles: int = 0
    unlinked: bool = False
    failed_errno: int | None = None  # a write failed: the next flush reports it
    mtime_ns: int = field(default_factory=time.time_ns)
    metadata: dict[str, str | None] = field(default_factory=dict)  # xattrs set before close
    session_version: int | None = None  # the version this open file registered last
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def dirty(self) -> bool:
        return self.staging is not None

    @property
    def size(self) -> int:
        if self.staging is not None:
            return self.staging.size
        return self.document.bytes if self.document else 0


class Writes:
    """Every file open for writing in one mount, by inode and by (parent, name)."""

    def __init__(self, store: Store, writer: CatalogWriter | None) -> None:
        self.store = store
        self.writer = writer  # None on a read-only mount, which never finalizes
        self.by_ino: dict[int, OpenWrite] = {}
        self._by_name: dict[tuple[int, str], OpenWrite] = {}

    def get(self, ino: int) -> OpenWrite | None:
        return self.by_ino.get(ino)

    def named(self, parent_ino: int, name: str) -> OpenWrite | None:
        return self._by_name.get((parent_ino, name))

    def in_directory(self, dir_ino: int) -> list[OpenWrite]:
        return [w for w in self.by_ino.values() if w.parent_ino == dir_ino and not w.unlinked]

    def create(self, ino: int, parent_ino: int, name: str) -> OpenWrite:
        """A new, empty file (create): dirty from the start, so close registers it."""
        write = OpenWrite(ino=ino, parent_ino=parent_ino, name=name, document=None,
                          staging=self.store.blobs.stage())
        self._add(write)
        return write

    def open(self, ino: int) -> OpenWrite:
        """The OpenWrite of an existing file, made on first use."""
        write = self.by_ino.get(ino)
        if write is None:
            doc = self.store.catalog.get_document(ino)
            if doc is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            write = OpenWrite(ino=ino, parent_ino=self.store.catalog.directory_of(doc).ino,
                              name=doc.basename, document=doc, mtime_ns=doc.mtime_ns)
            self._add(write)
        return write

    def _add(self, write: OpenWrite) -> None:
        self.by_ino[write.ino] = write
        self._by_name[(write.parent_ino, write.name)] = write

    def move(self, write: OpenWrite, parent_ino: int, name: str) -> None:
        self.drop_name(write)
        write.parent_ino, write.name = parent_ino, name
        self._by_name[(parent_ino, name)] = write

    def drop_name(self, write: OpenWrite) -> None:
        if self._by_name.get((write.parent_ino, write.name)) is write:
            del self._by_name[(write.parent_ino, write.name)]

    def release(self, write: OpenWrite) -> None:
        """One handle less; the last one drops unfinalized bytes (nothing half-done).

        While a change by path (`changing`) holds the file, it finalizes and forgets
        it when it is done instead.
        """
        write.open_handles -= 1
        if write.open_handles == 0 and not write.lock.locked():
            self._forget(write)

    def _forget(self, write: OpenWrite) -> None:
        if write.staging is not None:
            write.staging.discard()
            write.staging = None
        self.by_ino.pop(write.ino, None)
        self.drop_name(write)

    @asynccontextmanager
    async def hold(self, write: OpenWrite) -> AsyncIterator[OpenWrite]:
        """Lock `write` for a change; if its last handle went meanwhile, forget it after.

        `release` leaves a locked file alone, so whoever holds the lock tidies up.
        """
        async with write.lock:
            try:
                yield write
            finally:
                if write.open_handles == 0 and self.by_ino.get(write.ino) is write:
                    self._forget(write)

    # -- changing bytes (call with write.lock held) --------------------------------
    async def copy_on_write(self, write: OpenWrite) -> StagingFile:
        """The staging file of `write`, made from its blob on the first change."""
        if write.staging is not None:
            return write.staging
        staging = self.store.blobs.stage()
        if write.document is not None and write.document.bytes:
            fd = self.store.blobs.open_blob(write.document.sha256)
            try:
                await trio.to_thread.run_sync(staging.copy_from, fd)
            except BaseException:
                staging.discard()
                raise
            finally:
                os.close(fd)
        write.staging = staging
        return staging

    async def write(self, write: OpenWrite, data: bytes, offset: int) -> int:
        try:
            staging = await self.copy_on_write(write)
            written = await trio.to_thread.run_sync(staging.write, data, offset)
        except OSError as e:
            write.failed_errno = e.errno or errno.EIO
            raise
        write.mtime_ns = time.time_ns()
        return written

    async def truncate(self, write: OpenWrite, size: int) -> None:
        if size == write.size:
            return
        if size == 0 and write.staging is None:
            write.staging = self.store.blobs.stage()  # nothing to copy
        staging = await self.copy_on_write(write)
        await trio.to_thread.run_sync(staging.truncate, size)
        write.mtime_ns = time.time_ns()

    async def finalize(self, write: OpenWrite) -> None:
        """Store and register a dirty file (law 6); errors reach the closing writer."""
        if write.failed_errno is not None:
            code, write.failed_errno = write.failed_errno, None
            if write.staging is not None:
                write.staging.discard()
                write.staging = None
            raise pyfuse3.FUSEError(code)
        if write.staging is None:
            return
        staging, write.staging = write.staging, None
        try:
            await self._place_and_register(write, staging)
        finally:
            staging.discard()

    async def _place_and_register(self, write: OpenWrite, staging: StagingFile) -> None:
        try:
            blob = await trio.to_thread.run_sync(place_blob, self.store.blobs, staging)
        except OSError as e:
            log.error("finalizing %s failed: %s", write.name, e)
            raise pyfuse3.FUSEError(errno.ENOSPC if e.errno == errno.ENOSPC
                                    else errno.EIO) from None
        if write.unlinked:
            return
        catalog = self.store.catalog
        directory = catalog.get_directory(write.parent_ino)
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        meta = write.metadata
        new = NewDocument(
            resolver=directory.resolver, artifact_id=directory.artifact_id or "",
            basename=write.name, sha256=blob.sha256, bytes=blob.bytes,
            storage_uri=blob.storage_uri, source_url=meta.get("source_url"),
            # A new version keeps its content type unless it was set; a new file's is
            # guessed from its name.
            content_type=meta.get("content_type") or (
                None if write.document else guess_content_type(write.name)),
            run_id=meta.get("run_id"), mtime_ns=write.mtime_ns, dedup_hit=blob.dedup_hit)
        assert self.writer is not None
        supersede = write.session_version
        write.document = await self.writer(lambda writing: register_placed(
            self.store.blobs, {blob.sha256: staging},
            lambda present: writing.write_at_path(write.ino, directory, write.name, new,
                                                  present, supersede=supersede)))
        write.session_version = write.document.id
        write.metadata = {}
        log.debug("registered %s (%s, %d bytes)", write.name, blob.sha256[:12], blob.bytes)

    def changing(self, ino: int) -> Changing:
        """`async with writes.changing(ino) as write:` the locked OpenWrite of `ino`;
        for a file that was not open (truncate by path) it is finalized at the end."""
        return Changing(self, ino)


class Changing:
    def __init__(self, writes: Writes, ino: int) -> None:
        self.writes = writes
        self.transient = ino not in writes.by_ino
        self.write = writes.open(ino)

    async def __aenter__(self) -> OpenWrite:
        await self.write.lock.acquire()
        return self.write

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        try:
            if self.transient or self.write.open_handles == 0:
                try:
                    await self.writes.finalize(self.write)
                finally:
                    if self.write.open_handles == 0:
                        self.writes._forget(self.write)
        finally:
            self.write.lock.release()
