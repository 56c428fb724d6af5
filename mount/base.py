"""What every group of handlers shares: the mount's state and the helpers on it.

`CasfsOperations` (operations.py) is this base plus its handler groups:
directories (directories.py), extended attributes (xattr_handlers.py), and names,
attributes and files (operations.py itself).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

import pyfuse3

from casfs.catalog import ROOT_INO
from casfs.catalog.changes import Change, DirectoryChange
from casfs.records import Directory, Document
from casfs.store import Store

from . import control
from .absent_names import AbsentNames
from .attributes import Attributes
from .boundary import unreachable
from .catalog_reader import CatalogReader
from .catalog_writer import CatalogWriter
from .closes_behind import ClosesBehind
from .control import Control
from .directory_cache import DirectoryCache
from .durability_rounds import DurabilityRounds
from .files import Handle
from .filled_directories import FilledDirectories
from .listing_cache import MAX_LISTING, ListingCache
from .open_files import OpenFiles

log = logging.getLogger("casfs.mount")


class OperationsBase(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, store: Store, writer: CatalogWriter | None, *, readonly: bool,
                 cache_timeout: float, xattrs: bool = True, control_shown: bool = True,
                 snapshots: bool = False) -> None:
        super().__init__()
        self.store = store
        self.xattrs = xattrs
        self.query = CatalogReader(store)
        self.directories = DirectoryCache(cache_timeout)
        self.listings = ListingCache(cache_timeout, enabled=not store.catalog.local)
        self.filled = FilledDirectories(cache_timeout, enabled=not store.catalog.local)
        if writer is not None:
            writer.on_commit = self._committed
        self.readonly = readonly
        self.attrs = Attributes(readonly=readonly, cache_timeout=cache_timeout)
        # A read-only mount has no writer: every writing handler refuses first.
        self._writer = writer
        self.durability: DurabilityRounds | None = None  # set for -o durability=batch
        self.behind: ClosesBehind | None = None  # so is this: closes_behind.py
        self.files = OpenFiles(store, self.query, writer, self.directories)
        self.control = Control(store, self.attrs, self._gauges, shown=control_shown,
                               snapshots=snapshots)
        # How readdir hands an entry to the kernel; the tree of a snapshot inside a
        # mount puts its own in front, to move the entry's inode into its range.
        self.readdir_reply: Callable[[pyfuse3.ReaddirToken, bytes, pyfuse3.EntryAttributes,
                                      int], bool] = pyfuse3.readdir_reply
        self.control.started_ns = time.time_ns()
        self.handles: dict[int, Handle] = {}
        self.reads = 0  # READ requests answered (passthrough reads never come here)
        self.lookups: dict[int, int] = {}
        # inode -> version_key of the bytes the kernel may hold in its page cache
        self.cached: dict[int, int] = {}
        self.absent = AbsentNames()
        self._next_fh = 1
        self._refused: set[str] = set()
        self._root_mtime_ns: int | None = None

    def _gauges(self) -> list[tuple[str, str, float]]:
        gauges: list[tuple[str, str, float]] = [
            ("casfs_mount_open_files", "Files open for writing in this mount.",
             self.files.writing_count()),
            ("casfs_mount_known_inodes", "Inodes the kernel holds references to.",
             len(self.lookups)),
            ("casfs_mount_read_requests", "Reads of documents the kernel asked this daemon for.",
             self.reads),
            ("casfs_mount_catalog_failures", "Requests answered EIO because the catalog "
             "server could not be reached, did not answer within catalog_timeout, or "
             "stayed locked (the log has the first of each 30 s).", unreachable.count)]
        if self._writer is not None:
            gauges += [("casfs_mount_registrations", "Closed files registered by this mount.",
                        self._writer.rounds.items),
                       ("casfs_mount_registration_commits", "Catalog commits those took "
                        "(group commit: files closed together share one).",
                        self._writer.rounds.rounds),
                       ("casfs_mount_registration_trips", "Times a worker thread was sent "
                        "to run those commits (it runs them back to back while closes "
                        "wait).", self._writer.rounds.trips),
                       ("casfs_mount_registration_seconds", "Time those commits took in "
                        "their thread, blob syncs included (over the mount's uptime: "
                        "how busy registration was).", self._writer.rounds.seconds)]
        if self.behind is not None:
            gauges += [("casfs_mount_closes_answered_early", "Closes of a bulk load "
                        "answered before their registration.", self.behind.answered),
                       ("casfs_mount_registrations_pending", "Of those, registrations "
                        "still under way.", self.behind.pending),
                       ("casfs_mount_registrations_failed_after_close", "Of those, "
                        "registrations that failed (the log names the files; the next "
                        "fsync of each descriptor open then gets EIO).", self.behind.failed)]
        staging = self.files.staging
        gauges += [("casfs_mount_staging_made_ahead", "Staging files made ahead of the "
                    "creates that took them, off the event loop.", staging.made_ahead),
                   ("casfs_mount_staging_made_at_create", "Creates that found no staging "
                    "file made ahead and waited for one.", staging.made_here),
                   ("casfs_mount_staging_reused", "Staging files of dedup hits emptied "
                    "for another create instead of freed.", staging.reused),
                   ("casfs_mount_passthrough_opens", "Opens answered with the blob as "
                    "the backing file: the kernel reads it without asking the daemon.",
                    self.files.passthrough.opens)]
        return gauges

    def forget_cached(self, changes: list[Change]) -> None:
        """Drop what this mount keeps of the places another host changed (called
        from the change listener's thread)."""
        if any(isinstance(c, DirectoryChange) for c in changes):
            self.directories.forget()
        self.listings.drop(changes)
        self.filled.announced(changes)

    def _committed(self, changes: list[Change] | None) -> None:
        """What a transaction of this mount changed (called on the writer's thread)."""
        self.listings.drop(changes)
        self.filled.committed(changes)

    # -- helpers ----------------------------------------------------------------
    async def _settled(self, ino: int | None) -> None:
        """Return once a registration still under way behind its close (a bulk load's:
        closes_behind.py) has ended, so that a change applies to what it registered."""
        if self.behind is not None and ino is not None:
            await self.behind.settle(ino)

    @property
    def write_catalog(self) -> CatalogWriter:
        if self._writer is None:
            raise pyfuse3.FUSEError(errno.EROFS)
        return self._writer

    def _refuse(self, what: str, code: int) -> pyfuse3.FUSEError:
        """An operation the tree does not allow; logged once per kind."""
        if what not in self._refused:
            self._refused.add(what)
            log.info("refused: %s (%s)", what, errno.errorcode.get(code, code))
        return pyfuse3.FUSEError(code)

    async def _root_mtime(self) -> int:
        if self._root_mtime_ns is None:
            self._root_mtime_ns = (await self.query(lambda c: c.root_mtime_ns())
                                   or self.control.started_ns)
        return self._root_mtime_ns

    def _writable(self) -> None:
        if self.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)

    async def _directory(self, ino: int) -> Directory | None:
        if ino == ROOT_INO or self.control.owns(ino):
            return None
        cached = self.directories.get(ino)
        if cached is not None:
            return cached
        found = await self.query(lambda c: c.get_directory(ino))
        if found is not None:
            self.directories.put(found)
        return found

    async def _is_document(self, ino: int) -> bool:
        return await self.query(lambda c: c.get_document(ino)) is not None

    async def _artifact_dir(self, ino: int, what: str) -> Directory:
        """The artifact directory `ino`, or EPERM: files live only at depth 3."""
        directory = await self._directory(ino)
        if directory is None and ino != ROOT_INO and await self._is_document(ino):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if directory is None or directory.artifact_id is None:
            raise self._refuse(f"{what} outside an artifact directory", errno.EPERM)
        return directory

    def _counted(self, attr: pyfuse3.EntryAttributes) -> pyfuse3.EntryAttributes:
        self.lookups[attr.st_ino] = self.lookups.get(attr.st_ino, 0) + 1
        return attr

    async def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        if ino == ROOT_INO:
            return self.attrs.directory(ROOT_INO, await self._root_mtime())
        if self.control.owns(ino):
            return self.control.attr(ino)
        file = self.files.get(ino)
        if file is not None:
            return self.attrs.open_file(file)
        directory = self.directories.get(ino)  # kept: no round trip to ask for a document
        if directory is not None:
            return self.attrs.directory(ino, directory.mtime_ns)
        doc = await self.query(lambda c: c.get_document(ino))
        if doc is not None:
            return self.attrs.document(doc)
        directory = await self._directory(ino)
        if directory is not None:
            return self.attrs.directory(ino, directory.mtime_ns)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def _child(self, parent_ino: int, name: str) -> pyfuse3.EntryAttributes | None:
        """The attributes of `name` in `parent_ino`, or None when there is none."""
        file = self.files.named(parent_ino, name)
        if file is not None:
            return self.attrs.open_file(file)
        if self.control.owns(parent_ino) or (parent_ino == ROOT_INO and name == control.NAME):
            return self.control.lookup(parent_ino, name)
        directory = await self._directory(parent_ino)
        if parent_ino == ROOT_INO or (directory and directory.artifact_id is None):
            child = await self.query(lambda c: c.lookup_directory(parent_ino, name))
            return self.attrs.directory(child.ino, child.mtime_ns) if child else None
        if directory is None:
            raise pyfuse3.FUSEError(
                errno.ENOTDIR if await self._is_document(parent_ino) else errno.ENOENT)
        doc = await self._document_named(directory, name)
        if doc is None:
            return None
        file = self.files.get(doc.ino)  # open here: shown as this mount has it open
        return self.attrs.open_file(file) if file else self.attrs.document(doc)

    async def _document_named(self, directory: Directory, name: str) -> Document | None:
        """The live document `name` of an artifact directory: from its kept listing,
        from a fetch of the whole listing once it is read name by name, or by name."""
        if self.filled.absent(directory, name):
            return None
        listing = self.listings.names(directory)
        if listing is not None:
            return listing.get(name)
        started = self.listings.wants(directory)
        if started is None:
            return await self.query(lambda c: c.lookup_document(directory, name))
        documents = await self.query(
            lambda c: c.list_documents(directory, 0, MAX_LISTING + 1))
        self.listings.keep(directory, documents, started)
        if len(documents) > MAX_LISTING:
            return await self.query(lambda c: c.lookup_document(directory, name))
        return next((d for d in documents if d.basename == name), None)
