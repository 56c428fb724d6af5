"""Files open in the mount: one `OpenFile` per inode, shared by all its descriptors.

The kernel keeps one page cache and one size per inode, so every descriptor of an
inode on one mount must be served the same bytes, or a read fills the cache with
bytes another descriptor does not expect and a short read shrinks the size the
kernel holds (which is how appends used to land over earlier lines). Those bytes
are the OpenFile's: its staging file while it has writes not yet finalized, else
the blob of `document`, the version this mount shows. Reads go by inode, never by
what a descriptor saw when it was opened.

An OpenFile pins its bytes from the first open to the last release: it holds an
open descriptor on its blob (`BlobPin`), so unlink, rename-over, an overwrite on
another mount and gc do not reach a file that is open (law 8). While an inode is
open here, its version moves only through this mount's own writes; a version
registered elsewhere is taken at the first open after the last descriptor here
closed (close-to-open; the README's "Consistency" section is the user's version).

Writes stage a copy of the blob on the first change (copy-on-write); flush and
fsync finalize the staging file through the one ingest path, so a close() that
returned 0 means stored and registered (law 6), and the file's bytes are then the
new blob's.

A write is answered once its bytes are queued on the staging file, in memory; a
worker thread writes and hashes the queue while the writer sends the next bytes
(`DRAIN_FROM`), and a writer that outruns it waits (`QUEUE_AT_MOST`). A small file
never leaves the event loop before its close, which writes, hashes and places it in
one trip. A write that fails in the drain fails the next write or the close, so
nothing half-written is registered.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

import pyfuse3
import trio

from casfs.blobs.staging import StagingFile
from casfs.ingest import StoredBlob, guess_content_type, place_blob
from casfs.records import Document, NewDocument, PathWrite
from casfs.store import Store

from .blob_pin import BlobPin
from .catalog_reader import CatalogReader
from .catalog_writer import CatalogWriter, ToPlace
from .directory_cache import DirectoryCache
from .passthrough import Passthrough
from .staging_reserve import StagingReserve

log = logging.getLogger("casfs.mount")

# A file's queued writes go to a worker thread from this many bytes on; fewer stay in
# memory until something reads or closes the file. The writer waits while more than
# QUEUE_AT_MOST are queued. Measured in contrib/bench/write_sizes.py (README).
DRAIN_FROM = 64 << 10
QUEUE_AT_MOST = 4 << 20


@dataclass
class OpenFile:
    ino: int
    document: Document | None  # the version shown; None for a file never finalized
    pin: BlobPin | None = None  # the document's bytes, None when it has none
    # Where the file is, once known: always for files opened for writing, which are
    # found by name until they are closed (a new file is in no catalog yet).
    parent_ino: int | None = None
    name: str | None = None
    staging: StagingFile | None = None  # bytes not yet finalized, None when clean
    open_handles: int = 0
    unlinked: bool = False
    failed_errno: int | None = None  # a write failed: the next flush reports it
    mtime_ns: int = field(default_factory=time.time_ns)
    metadata: dict[str, str | None] = field(default_factory=dict)  # xattrs set before close
    session_version: int | None = None  # the version this open file registered last
    backing_id: int | None = None  # the kernel reads `pin`'s blob itself (passthrough.py)
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def dirty(self) -> bool:
        return self.staging is not None

    @property
    def size(self) -> int:
        if self.staging is not None:
            return self.staging.size
        return self.document.bytes if self.document else 0

    @property
    def whole_blob_fd(self) -> int | None:
        """The pinned blob's descriptor when it holds all of the file's bytes (clean,
        and not still arriving from object storage): what passthrough can name."""
        pin = self.pin
        if self.staging is not None or pin is None or pin.fd < 0 or not pin.complete:
            return None
        return pin.fd

    @property
    def settling(self) -> bool:
        """Whether its bytes are a blob still arriving from object storage, or a
        cached one whose check (its first open in this mount) has not ended."""
        return self.staging is None and self.pin is not None and not self.pin.complete

    async def read(self, size: int, offset: int) -> bytes | memoryview:
        """The file's current bytes: staged ones while dirty, else the pinned blob's."""
        if self.staging is not None:
            async with self.lock:  # a finalize must not close the staging file under us
                if self.staging is not None:
                    return await trio.to_thread.run_sync(self.staging.read, size, offset)
        pin = self.pin
        if pin is None:
            return b""
        return await pin.pread(size, offset)


class OpenFiles:
    """Every file open in one mount, by inode, and those being written by name."""

    def __init__(self, store: Store, query: CatalogReader, writer: CatalogWriter | None,
                 directories: DirectoryCache) -> None:
        self.store = store
        self.query = query
        self.directories = directories
        self.writer = writer  # None on a read-only mount, which never finalizes
        self.by_ino: dict[int, OpenFile] = {}
        self._by_name: dict[tuple[int, str], OpenFile] = {}
        self._draining: set[StagingFile] = set()  # whose queue a worker thread writes
        self.durable_close = True  # False in a bulk load (-o durability=batch)
        self.staging = StagingReserve(store.blobs.stage)
        self.passthrough = Passthrough(wanted=False)  # the daemon sets the mount's

    def get(self, ino: int) -> OpenFile | None:
        return self.by_ino.get(ino)

    def named(self, parent_ino: int, name: str) -> OpenFile | None:
        return self._by_name.get((parent_ino, name))

    def in_directory(self, dir_ino: int) -> list[OpenFile]:
        return [f for f in self._by_name.values() if f.parent_ino == dir_ino]

    def writing_count(self) -> int:
        return len(self._by_name)

    async def create(self, ino: int, parent_ino: int, name: str) -> OpenFile:
        """A new, empty file (create): dirty from the start, so close registers it."""
        file = OpenFile(ino=ino, document=None, staging=await self.staging.take(),
                        parent_ino=parent_ino, name=name)
        self.by_ino[ino] = file
        self._by_name[(parent_ino, name)] = file
        return file

    async def open(self, ino: int, *, for_writing: bool) -> tuple[OpenFile, bool]:
        """The OpenFile of an existing file, made and pinned on first use, with one
        more handle counted (the caller releases it); True when it was made now (and
        so shows the catalog's current version)."""
        file = self.by_ino.get(ino)
        if file is not None and for_writing and file.backing_id is not None:
            raise pyfuse3.FUSEError(errno.ETXTBSY)  # its readers read the blob itself
        made = file is None
        if file is None:
            doc = await self.query(lambda c: c.get_document(ino))
            if doc is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            pin = await self._pin(doc)
            file = self.by_ino.get(ino)  # opened by another request meanwhile
            if file is None:
                file = OpenFile(ino=ino, document=doc, pin=pin, mtime_ns=doc.mtime_ns)
                self.by_ino[ino] = file
            else:
                made = False
                if pin is not None:
                    pin.retire()
        file.open_handles += 1  # before any await: a release meanwhile must not forget it
        if for_writing:
            try:
                await self.locate(file)
            except BaseException:
                self.release(file)
                raise
        return file, made

    async def locate(self, file: OpenFile) -> None:
        """Learn where the file is, so that it is found by name until it is closed."""
        if file.parent_ino is not None or file.unlinked:
            return
        document = file.document
        assert document is not None  # a file without one was made by create
        parent = await self.query(lambda c: c.directory_of(document))
        if file.parent_ino is None:
            self.move(file, parent.ino, document.basename)

    async def _pin(self, doc: Document) -> BlobPin | None:
        """An open descriptor on the document's bytes. A blob store across the network
        may have to fetch them into its cache first: that runs in a worker thread."""
        if doc.bytes == 0:
            return None
        blobs = self.store.blobs
        try:
            if blobs.local:
                return BlobPin(*blobs.open_blob_early(doc.sha256, doc.bytes))
            # A large blob not cached yet: reads wait for their own bytes only.
            return BlobPin(*await trio.to_thread.run_sync(blobs.open_blob_early, doc.sha256,
                                                          doc.bytes))
        except FileNotFoundError:
            log.error("blob %s of inode %d is missing (run casfs fsck)", doc.sha256, doc.ino)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as e:
            log.error("cannot read blob %s of inode %d: %s", doc.sha256, doc.ino, e)
            raise pyfuse3.FUSEError(errno.EIO) from None

    def move(self, file: OpenFile, parent_ino: int, name: str) -> None:
        self.drop_name(file)
        file.parent_ino, file.name = parent_ino, name
        self._by_name[(parent_ino, name)] = file

    def drop_name(self, file: OpenFile) -> None:
        if file.parent_ino is not None and file.name is not None and \
                self._by_name.get((file.parent_ino, file.name)) is file:
            del self._by_name[(file.parent_ino, file.name)]

    def unlinked(self, file: OpenFile) -> None:
        """Its name is gone; descriptors still open keep reading its bytes."""
        file.unlinked = True
        self.drop_name(file)

    def release(self, file: OpenFile) -> None:
        """One handle less; the last one drops unfinalized bytes (nothing half-done)
        and the pin. While a change holds the file, that change tidies up instead."""
        file.open_handles -= 1
        if file.open_handles == 0 and not file.lock.locked():
            self._forget(file)

    async def _place(self, staging: StagingFile) -> StoredBlob:
        """Store a staging file's bytes in a blob store across the network (law 1),
        in a worker thread of its own: uploads of files closed at once overlap."""
        return await trio.to_thread.run_sync(
            lambda: place_blob(self.store.blobs, staging, durable=self.durable_close))

    def _forget(self, file: OpenFile) -> None:
        self.passthrough.release(file)
        if file.staging is not None:
            file.staging.discard()
            file.staging = None
        if file.pin is not None:
            file.pin.retire()
            file.pin = None
        self.by_ino.pop(file.ino, None)
        self.drop_name(file)

    @asynccontextmanager
    async def hold(self, file: OpenFile) -> AsyncIterator[OpenFile]:
        """Lock `file` for a change; if its last handle went meanwhile, forget it after."""
        async with file.lock:
            try:
                yield file
            finally:
                if file.open_handles == 0 and self.by_ino.get(file.ino) is file:
                    self._forget(file)

    # -- changing bytes (call with file.lock held) ---------------------------------
    async def copy_on_write(self, file: OpenFile) -> StagingFile:
        """The staging file of `file`, made from its pinned blob on the first change."""
        if file.staging is not None:
            return file.staging
        staging = await self.staging.take()
        if file.pin is not None:
            try:
                await file.pin.arrived()
                await trio.to_thread.run_sync(staging.copy_from, file.pin.fd)
            except BaseException:
                staging.discard()
                raise
        file.staging = staging
        return staging

    async def write(self, file: OpenFile, data: bytes, offset: int) -> int:
        try:
            staging = await self.copy_on_write(file)
            staging.queue(data, offset)
            if staging.queued_bytes > QUEUE_AT_MOST:
                await trio.to_thread.run_sync(staging.apply_queued)
        except OSError as e:
            file.failed_errno = e.errno or errno.EIO
            raise
        file.mtime_ns = time.time_ns()
        if staging.queued_bytes >= DRAIN_FROM and staging not in self._draining:
            self._draining.add(staging)
            trio.lowlevel.spawn_system_task(self._drain, staging)
        return len(data)

    async def _drain(self, staging: StagingFile) -> None:
        """Write a staging file's queue in a worker thread until it stays empty. A
        failure stays with the staging file, for the next write or the close."""
        try:
            while staging.queued_bytes:
                await trio.to_thread.run_sync(staging.apply_queued)
        except OSError:
            pass
        except Exception:
            log.exception("writing queued bytes failed")
        finally:
            self._draining.discard(staging)

    async def truncate(self, file: OpenFile, size: int) -> None:
        if size == file.size:
            return
        if size == 0 and file.staging is None:
            file.staging = await self.staging.take()  # nothing to copy
        staging = await self.copy_on_write(file)
        await trio.to_thread.run_sync(staging.truncate, size)
        file.mtime_ns = time.time_ns()

    async def finalize(self, file: OpenFile) -> None:
        """Store and register a dirty file (law 6); errors reach the closing writer.

        Afterwards the file's bytes are the new blob's, for every descriptor."""
        if file.failed_errno is not None:
            code, file.failed_errno = file.failed_errno, None
            if file.staging is not None:
                file.staging.discard()
                file.staging = None
            raise pyfuse3.FUSEError(code)
        if file.staging is None or file.unlinked:
            return  # nothing to register; an unlinked file's bytes stay readable
        staging = file.staging
        try:
            document = await self._place_and_register(file, staging)
        except BaseException:
            file.staging = None  # nothing half-done stays: back to the last version
            staging.discard()
            raise
        if document is None:
            return  # unlinked meanwhile
        new_pin = await self._pin(document)
        if file.pin is not None:
            file.pin.retire()
        file.document, file.pin, file.staging = document, new_pin, None
        self.staging.give_back(staging)

    async def _place_and_register(self, file: OpenFile, staging: StagingFile
                                  ) -> Document | None:
        """Place the file's blob, then register it. On local blobs the placing (its
        syncs included, unless in a bulk load) happens in the registration's round,
        with the round's other blobs, before its transaction commits (on an embedded
        catalog on its thread, linked first and synced once, casfs.link_first; on a
        catalog server beside its statement: see catalog_writer.py): one trip to a
        worker thread a close instead of two. Measured with write_cost.py
        (README, "Group commit"): one writer 399-660 files/s (median 517) against
        354-492 (382) with two trips; in a bulk load 919-931 against 780-818. An
        upload to object storage runs in a thread of its own instead, in parallel
        with the others."""
        in_round = self.store.blobs.local
        blob = None if in_round else await self._placed(file, staging)
        if file.unlinked:
            return None
        await self.locate(file)
        parent_ino, name = file.parent_ino, file.name
        assert parent_ino is not None and name is not None
        # Where the file is registered: an embedded catalog is asked (little cost, and a
        # directory another process renamed is never written to under its old place);
        # a remote one's kept directory is dropped when another host's change is told.
        kept = None if self.store.catalog.local else self.directories.get(parent_ino)
        directory = kept or await self.query(lambda c: c.get_directory(parent_ino))
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        meta = dict(file.metadata)
        # A new version keeps its content type unless it was set; a new file's is
        # guessed from its name.
        content_type = meta.get("content_type") or (
            None if file.document else guess_content_type(name))
        ino, mtime_ns, supersede = file.ino, file.mtime_ns, file.session_version

        def write_of(blob: StoredBlob) -> PathWrite:
            new = NewDocument(
                resolver=directory.resolver, artifact_id=directory.artifact_id or "",
                basename=name, sha256=blob.sha256, bytes=blob.bytes,
                storage_uri=blob.storage_uri, source_url=meta.get("source_url"),
                content_type=content_type, run_id=meta.get("run_id"), mtime_ns=mtime_ns,
                dedup_hit=blob.dedup_hit)
            return PathWrite(ino, directory, name, new, supersede)

        assert self.writer is not None
        if blob is not None:
            document = await self.writer.register(write_of(blob), staging)
        else:
            try:
                document = await self.writer.register(
                    ToPlace(write_of, self.durable_close), staging)
            except OSError as e:
                raise self._failed(file, e) from None
        file.session_version = document.id
        file.metadata = {}
        log.debug("registered %s (%s, %d bytes)", name, document.sha256[:12], document.bytes)
        return document

    async def _placed(self, file: OpenFile, staging: StagingFile) -> StoredBlob:
        try:
            return await self._place(staging)
        except OSError as e:
            raise self._failed(file, e) from None

    @staticmethod
    def _failed(file: OpenFile, error: OSError) -> pyfuse3.FUSEError:
        """What the closing writer gets when the bytes could not be stored."""
        log.error("finalizing %s failed: %s", file.name, error)
        return pyfuse3.FUSEError(errno.ENOSPC if error.errno == errno.ENOSPC else errno.EIO)

    def changing(self, ino: int) -> Changing:
        """`async with files.changing(ino) as file:` the locked OpenFile of `ino`; for
        a file that was not open (truncate by path) it is finalized at the end."""
        return Changing(self, ino)


class Changing:
    def __init__(self, files: OpenFiles, ino: int) -> None:
        self.files = files
        self.ino = ino
        self.transient = ino not in files.by_ino

    async def __aenter__(self) -> OpenFile:
        self.file, _ = await self.files.open(self.ino, for_writing=True)
        await self.file.lock.acquire()
        return self.file

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        try:
            self.file.open_handles -= 1  # the one `open` counted
            if self.transient or self.file.open_handles == 0:
                try:
                    await self.files.finalize(self.file)
                finally:
                    if self.file.open_handles == 0:
                        self.files._forget(self.file)
        finally:
            self.file.lock.release()
