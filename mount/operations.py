"""The pyfuse3 handlers: the tree /<resolver>/<artifact_id>/<basename> over a store.

Depth 1 and 2 are directories from the catalog's `directories` table, depth 3 are
documents. Reads come from blobs; writes are staged and finalized on flush/fsync
through the one ingest path. Every handler is wrapped by `_boundary`, so the only
exception that leaves one is a FUSEError: a user's input can never end the mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import apsw
import pyfuse3
import trio

from casfs import naming
from casfs.blobstore import StagingFile
from casfs.errors import Conflict, InvalidName, NotFound
from casfs.ingest import guess_content_type, place_blob, register_placed
from casfs.records import Directory, Document, NewDocument
from casfs.schema import ROOT_INO
from casfs.store import Store

from . import xattrs
from .files import Handle, OpenWrite

log = logging.getLogger("casfs.mount")

P = ParamSpec("P")
R = TypeVar("R")
READDIR_PAGE = 500
_ERRNO_OF = {Conflict: errno.EEXIST, NotFound: errno.ENOENT}


def _boundary(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Map every failure inside a handler to an errno (design notes, section 8)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except InvalidName as e:
            raise pyfuse3.FUSEError(e.errno_hint) from None
        except (Conflict, NotFound) as e:
            raise pyfuse3.FUSEError(_ERRNO_OF[type(e)]) from None
        except OSError as e:
            log.warning("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except apsw.FullError:
            log.error("%s: the catalog's filesystem is full", handler.__name__)
            raise pyfuse3.FUSEError(errno.ENOSPC) from None
        except apsw.ReadOnlyError:
            raise pyfuse3.FUSEError(errno.EROFS) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class CasfsOperations(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, store: Store, *, readonly: bool, cache_timeout: float) -> None:
        super().__init__()
        self.store = store
        self.catalog = store.catalog
        self.readonly = readonly
        self.cache_timeout = cache_timeout
        self.uid, self.gid = os.getuid(), os.getgid()
        self.writes: dict[int, OpenWrite] = {}
        self.writes_by_name: dict[tuple[int, str], OpenWrite] = {}
        self.handles: dict[int, Handle] = {}
        self.lookups: dict[int, int] = {}
        self.opened_sha: dict[int, str] = {}  # what the kernel may hold in its page cache
        self._next_fh = 1
        self._refused: set[str] = set()

    # -- helpers ----------------------------------------------------------------
    def _refuse(self, what: str, code: int) -> pyfuse3.FUSEError:
        """An operation the tree does not allow; logged once per kind."""
        if what not in self._refused:
            self._refused.add(what)
            log.info("refused: %s (%s)", what, errno.errorcode.get(code, code))
        return pyfuse3.FUSEError(code)

    def _writable(self) -> None:
        if self.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)

    def _directory(self, ino: int) -> Directory | None:
        if ino == ROOT_INO:
            return None
        return self.catalog.get_directory(ino)

    def _artifact_dir(self, ino: int, what: str) -> Directory:
        """The artifact directory `ino`, or EPERM: files live only at depth 3."""
        directory = self._directory(ino)
        if directory is None and ino != ROOT_INO and self._document(ino) is not None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if directory is None or directory.artifact_id is None:
            raise self._refuse(f"{what} outside an artifact directory", errno.EPERM)
        return directory

    def _document(self, ino: int) -> Document | None:
        return self.catalog.get_document(ino)

    def _counted(self, attr: pyfuse3.EntryAttributes) -> pyfuse3.EntryAttributes:
        self.lookups[attr.st_ino] = self.lookups.get(attr.st_ino, 0) + 1
        return attr

    def _base_attr(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = mode
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_blksize = 1 << 17
        attr.entry_timeout = attr.attr_timeout = self.cache_timeout
        return attr

    def _dir_attr(self, ino: int, mtime_ns: int) -> pyfuse3.EntryAttributes:
        attr = self._base_attr(ino, stat.S_IFDIR | (0o555 if self.readonly else 0o755))
        attr.st_nlink = 2
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime_ns
        return attr

    def _file_attr(self, ino: int, size: int, mtime_ns: int,
                   ctime: float) -> pyfuse3.EntryAttributes:
        attr = self._base_attr(ino, stat.S_IFREG | (0o444 if self.readonly else 0o644))
        attr.st_nlink = 1
        attr.st_size = size
        attr.st_blocks = (size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = mtime_ns
        attr.st_ctime_ns = int(ctime * 1e9)
        return attr

    def _doc_attr(self, doc: Document) -> pyfuse3.EntryAttributes:
        return self._file_attr(doc.ino, doc.bytes, doc.mtime_ns, doc.updated_at)

    def _write_attr(self, w: OpenWrite) -> pyfuse3.EntryAttributes:
        return self._file_attr(w.ino, w.size, w.mtime_ns, time.time())

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        if ino == ROOT_INO:
            return self._dir_attr(ROOT_INO, 0)
        if ino in self.writes:
            return self._write_attr(self.writes[ino])
        doc = self._document(ino)
        if doc is not None:
            return self._doc_attr(doc)
        directory = self._directory(ino)
        if directory is not None:
            return self._dir_attr(ino, directory.mtime_ns)
        raise pyfuse3.FUSEError(errno.ENOENT)

    def _child(self, parent_ino: int, name: str) -> pyfuse3.EntryAttributes | None:
        """The attributes of `name` in `parent_ino`, or None when there is none."""
        write = self.writes_by_name.get((parent_ino, name))
        if write is not None:
            return self._write_attr(write)
        directory = self._directory(parent_ino)
        if parent_ino == ROOT_INO or (directory and directory.artifact_id is None):
            child_dir = self.catalog.lookup_directory(parent_ino, name)
            return self._dir_attr(child_dir.ino, child_dir.mtime_ns) if child_dir else None
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self._document(parent_ino) else errno.ENOENT)
        doc = self.catalog.lookup_document(directory, name)
        return self._doc_attr(doc) if doc else None

    # -- names and attributes ----------------------------------------------------
    @_boundary
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._counted(self._attr(parent_inode))
        if name == b"..":
            directory = self._directory(parent_inode)
            return self._counted(self._attr(directory.parent_ino if directory else ROOT_INO))
        try:
            text = naming.check_component(name)
        except InvalidName as e:
            raise pyfuse3.FUSEError(
                errno.ENAMETOOLONG if e.errno_hint == errno.ENAMETOOLONG else errno.ENOENT
            ) from None
        attr = self._child(parent_inode, text)
        if attr is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._counted(attr)

    @_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def forget(self, inode_list: Any) -> None:
        for ino, count in inode_list:
            left = self.lookups.get(ino, 0) - count
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                self.opened_sha.pop(ino, None)

    @_boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        if self._directory(inode) is not None or inode == ROOT_INO:
            return self._attr(inode)  # chmod/chown/utimens on a directory: accepted, not kept
        if fields.update_size:
            async with self._writing(inode) as write:
                await self._truncate(write, attr.st_size)
        if fields.update_mtime:
            open_write = self.writes.get(inode)
            if open_write is not None:
                open_write.mtime_ns = attr.st_mtime_ns
            if open_write is None or not open_write.dirty:
                self.catalog.set_mtime(inode, attr.st_mtime_ns)
        # Mode and ownership are accepted and not kept: blobs stay read-only in the
        # CAS, and what `cp -a` / `rsync -a` ask for must not fail.
        return self._attr(inode)

    @_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.store.layout.root)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                     "f_files", "f_ffree", "f_favail"):
            setattr(data, name, getattr(st, name))
        data.f_namemax = naming.NAME_MAX
        return data

    # -- directories ------------------------------------------------------------
    @_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode != ROOT_INO and self._directory(inode) is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self._document(inode) else errno.ENOENT)
        return inode

    @_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """List a directory in pages by inode, resuming after `start_id` (the last inode)."""
        directory = self._directory(fh)
        after = start_id
        while True:
            entries: list[tuple[str, pyfuse3.EntryAttributes]]
            if directory is None or directory.artifact_id is None:
                dirs = self.catalog.list_directories(fh, after, READDIR_PAGE)
                full = len(dirs) == READDIR_PAGE
                entries = [(d.name, self._dir_attr(d.ino, d.mtime_ns)) for d in dirs]
            else:
                docs = self.catalog.list_documents(directory, after, READDIR_PAGE)
                full = len(docs) == READDIR_PAGE
                entries = self._merge_open_writes(fh, docs, after, full)
            for name, attr in entries:
                if not pyfuse3.readdir_reply(token, name.encode(), attr, attr.st_ino):
                    return
                self._counted(attr)
                after = attr.st_ino
            if not full:
                return

    def _merge_open_writes(self, dir_ino: int, docs: list[Document], after: int,
                           full: bool) -> list[tuple[str, pyfuse3.EntryAttributes]]:
        """Catalog entries of a page plus files open for writing in the same inode range."""
        last = docs[-1].ino if full else None
        entries = {d.ino: (d.basename, self._doc_attr(d)) for d in docs
                   if d.ino not in self.writes}
        for w in self.writes.values():
            if w.parent_ino == dir_ino and not w.unlinked and w.ino > after and (
                    last is None or w.ino <= last):
                entries[w.ino] = (w.name, self._write_attr(w))
        return [entries[ino] for ino in sorted(entries)]

    @_boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        text = naming.check_component(name)
        parent = self._directory(parent_inode)
        if parent_inode != ROOT_INO and (parent is None or parent.artifact_id is not None):
            raise self._refuse("mkdir below an artifact directory", errno.EPERM)
        if parent_inode == ROOT_INO and text in naming.RESERVED_ROOT_NAMES:
            raise pyfuse3.FUSEError(errno.EPERM)
        try:
            created = self.catalog.make_directory(parent_inode, text)
        except Conflict:
            raise pyfuse3.FUSEError(errno.EEXIST) from None
        return self._counted(self._dir_attr(created.ino, created.mtime_ns))

    @_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        text = naming.check_component(name)
        directory = self.catalog.lookup_directory(parent_inode, text)
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self._child(parent_inode, text)
                                    else errno.ENOENT)
        if any(w.parent_ino == directory.ino and not w.unlinked for w in self.writes.values()):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        try:
            self.catalog.remove_directory(directory.ino)
        except Conflict:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY) from None

    # -- files: open, read, write, close -----------------------------------------
    def _new_handle(self, handle: Handle) -> pyfuse3.FileInfo:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        info = pyfuse3.FileInfo(fh=fh)
        # Blobs never change, so the kernel may keep cached pages, unless this inode
        # now shows other bytes than when it was last opened.
        info.keep_cache = handle.sha256 is not None and \
            self.opened_sha.get(handle.ino) == handle.sha256
        if handle.sha256 is not None:
            self.opened_sha[handle.ino] = handle.sha256
        else:
            self.opened_sha.pop(handle.ino, None)
        return info

    def _open_write(self, ino: int, doc: Document | None = None) -> OpenWrite:
        write = self.writes.get(ino)
        if write is None:
            doc = doc or self._document(ino)
            if doc is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            write = OpenWrite(ino=ino, parent_ino=self.catalog.directory_of(doc).ino,
                              name=doc.basename, document=doc, mtime_ns=doc.mtime_ns)
            self.writes[ino] = write
            self.writes_by_name[(write.parent_ino, write.name)] = write
        return write

    @_boundary
    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        write = self.writes.get(inode)
        if not writable:
            if write is not None and write.dirty:
                return self._new_handle(Handle(inode, False, None))
            doc = write.document if write else self._document(inode)
            if doc is None:
                raise pyfuse3.FUSEError(errno.EISDIR if self._directory(inode) else errno.ENOENT)
            return self._new_handle(Handle(inode, False, doc.sha256))
        self._writable()
        write = self._open_write(inode)
        if flags & os.O_TRUNC:
            async with write.lock:
                await self._truncate(write, 0)
        write.open_handles += 1
        sha = None if write.dirty or write.document is None else write.document.sha256
        return self._new_handle(Handle(inode, True, sha))

    @_boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        self._writable()
        text = naming.check_component(name)
        if not stat.S_ISREG(mode):
            raise self._refuse("create of a non-regular file", errno.EPERM)
        directory = self._artifact_dir(parent_inode, "create")
        existing = self._child(parent_inode, text)
        if existing is not None:
            if flags & os.O_EXCL:
                raise pyfuse3.FUSEError(errno.EEXIST)
            info = await self.open(existing.st_ino, flags, ctx)
            return info, self._counted(self._attr(existing.st_ino))
        write = OpenWrite(ino=self.catalog.allocate_ino(), parent_ino=directory.ino,
                          name=text, document=None, staging=self.store.blobs.stage())
        write.open_handles = 1
        self.writes[write.ino] = write
        self.writes_by_name[(directory.ino, text)] = write
        info = self._new_handle(Handle(write.ino, True, None))
        return info, self._counted(self._write_attr(write))

    @_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        write = self.writes.get(handle.ino)
        if write is not None and write.staging is not None:
            staging = write.staging
            return await trio.to_thread.run_sync(staging.read, size, off)
        if handle.sha256 is None:  # opened while dirty; since finalized
            doc = write.document if write else self._document(handle.ino)
            if doc is None:
                return b""
            handle.sha256 = doc.sha256
        if handle.blob_fd < 0:
            handle.blob_fd = self.store.blobs.open_blob(handle.sha256)
        return await trio.to_thread.run_sync(os.pread, handle.blob_fd, size, off)

    async def _cow(self, write: OpenWrite) -> None:
        """Give a clean file a staging copy of its bytes before they change."""
        if write.staging is not None:
            return
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

    async def _truncate(self, write: OpenWrite, size: int) -> None:
        if size == write.size:
            return
        if size == 0 and write.staging is None:
            write.staging = self.store.blobs.stage()
        else:
            await self._cow(write)
        assert write.staging is not None
        await trio.to_thread.run_sync(write.staging.truncate, size)
        write.mtime_ns = time.time_ns()

    @_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        write = self.writes[handle.ino]
        async with write.lock:
            try:
                await self._cow(write)
                assert write.staging is not None
                written = await trio.to_thread.run_sync(write.staging.write, buf, off)
            except OSError as e:
                write.failed_errno = e.errno or errno.EIO
                raise
            write.mtime_ns = time.time_ns()
            return written

    async def _finalize(self, write: OpenWrite) -> None:
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
        directory = self.catalog.get_directory(write.parent_ino)
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        meta = write.metadata
        new = NewDocument(
            resolver=directory.resolver, artifact_id=directory.artifact_id or "",
            basename=write.name, sha256=blob.sha256, bytes=blob.bytes,
            storage_uri=blob.storage_uri, source_url=meta.get("source_url"),
            content_type=meta.get("content_type") or guess_content_type(write.name),
            run_id=meta.get("run_id"), mtime_ns=write.mtime_ns, dedup_hit=blob.dedup_hit)
        write.document = register_placed(
            self.store.blobs, {blob.sha256: staging},
            lambda present: self.catalog.write_at_path(write.ino, directory, write.name, new,
                                                       present))
        write.metadata = {}
        log.debug("registered %s (%s, %d bytes)", write.name, blob.sha256[:12], blob.bytes)

    async def _flush_write(self, fh: int) -> None:
        handle = self.handles.get(fh)
        if handle is None or not handle.writable:
            return
        write = self.writes[handle.ino]
        async with write.lock:
            await self._finalize(write)

    @_boundary
    async def flush(self, fh: int) -> None:
        await self._flush_write(fh)

    @_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._flush_write(fh)

    @_boundary
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle.blob_fd >= 0:
            os.close(handle.blob_fd)
        if not handle.writable:
            return
        write = self.writes.get(handle.ino)
        if write is None:
            return
        write.open_handles -= 1
        if write.open_handles == 0:
            if write.staging is not None:  # flush failed or never came: nothing half-done
                write.staging.discard()
            self._forget_write(write)

    def _forget_write(self, write: OpenWrite) -> None:
        self.writes.pop(write.ino, None)
        if self.writes_by_name.get((write.parent_ino, write.name)) is write:
            del self.writes_by_name[(write.parent_ino, write.name)]

    class _Writing:
        """`async with ops._writing(ino)`: the OpenWrite of `ino`, locked; a file that
        was not open is finalized and forgotten at the end (truncate by path)."""

        def __init__(self, ops: CasfsOperations, ino: int) -> None:
            self.ops, self.ino = ops, ino
            self.transient = ino not in ops.writes

        async def __aenter__(self) -> OpenWrite:
            self.write = self.ops._open_write(self.ino)
            await self.write.lock.acquire()
            return self.write

        async def __aexit__(self, *exc: object) -> None:
            try:
                if self.transient:
                    try:
                        await self.ops._finalize(self.write)
                    finally:
                        if self.write.open_handles == 0:
                            if self.write.staging is not None:
                                self.write.staging.discard()
                            self.ops._forget_write(self.write)
            finally:
                self.write.lock.release()

    def _writing(self, ino: int) -> CasfsOperations._Writing:
        return CasfsOperations._Writing(self, ino)

    # -- names: unlink, rename, link ---------------------------------------------
    @_boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        text = naming.check_component(name)
        write = self.writes_by_name.get((parent_inode, text))
        if write is not None:
            write.unlinked = True
            self._forget_name(write)
            if write.document is not None:
                self.catalog.unlink_document(write.ino)
            return
        directory = self._directory(parent_inode)
        doc = self.catalog.lookup_document(directory, text) if directory and \
            directory.artifact_id is not None else None
        if doc is None:
            child = self._child(parent_inode, text)
            raise pyfuse3.FUSEError(errno.EISDIR if child else errno.ENOENT)
        self.catalog.unlink_document(doc.ino)

    def _forget_name(self, write: OpenWrite) -> None:
        if self.writes_by_name.get((write.parent_ino, write.name)) is write:
            del self.writes_by_name[(write.parent_ino, write.name)]

    @_boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise self._refuse("rename with RENAME_EXCHANGE", errno.EINVAL)
        old = naming.check_component(name_old)
        new = naming.check_component(name_new)
        if parent_inode_new == ROOT_INO and new in naming.RESERVED_ROOT_NAMES:
            raise pyfuse3.FUSEError(errno.EPERM)
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        source_dir = self.catalog.lookup_directory(parent_inode_old, old)
        if source_dir is not None:
            await self._rename_directory(source_dir, parent_inode_new, new, noreplace)
            return
        source = self._child(parent_inode_old, old)
        if source is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        target_dir = self._artifact_dir(parent_inode_new, "rename of a file")
        target = self._child(parent_inode_new, new)
        if target is not None and target.st_ino != source.st_ino:
            if noreplace:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if stat.S_ISDIR(target.st_mode):
                raise pyfuse3.FUSEError(errno.EISDIR)
            await self.unlink(parent_inode_new, name_new, ctx)
        write = self.writes.get(source.st_ino)
        if write is None or write.document is not None:
            self.catalog.rename_document(source.st_ino, target_dir, new, replace=False)
        if write is not None:
            self._forget_name(write)
            write.parent_ino, write.name = target_dir.ino, new
            self.writes_by_name[(target_dir.ino, new)] = write

    async def _rename_directory(self, source: Directory, parent_new: int, new: str,
                                noreplace: bool) -> None:
        target = self.catalog.lookup_directory(parent_new, new)
        if target is not None and target.ino != source.ino:
            if noreplace:
                raise pyfuse3.FUSEError(errno.EEXIST)
            try:
                self.catalog.remove_directory(target.ino)  # only an empty one may be replaced
            except Conflict:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY) from None
        try:
            self.catalog.rename_directory(source.ino, parent_new, new)
        except NotFound:
            raise self._refuse("rename of a directory to another depth", errno.EPERM) from None

    @_boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        text = naming.check_component(new_name)
        directory = self._artifact_dir(new_parent_inode, "link")
        if self._child(new_parent_inode, text) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        write = self.writes.get(inode)
        if write is not None:
            async with write.lock:
                await self._finalize(write)
        linked = self.catalog.link_document(inode, directory, text)
        return self._counted(self._doc_attr(linked))

    @_boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        raise self._refuse("symlink", errno.EPERM)

    @_boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        raise self._refuse("mknod (devices, fifos, sockets)", errno.EPERM)

    # -- extended attributes ------------------------------------------------------
    def _xattr_values(self, inode: int) -> dict[str, str]:
        directory = self._directory(inode)
        if directory is not None:
            return xattrs.directory_xattrs(directory)
        if inode == ROOT_INO:
            return {}
        write = self.writes.get(inode)
        if write is not None:
            parent = self.catalog.get_directory(write.parent_ino)
            assert parent is not None
            doc = None if write.dirty else write.document
            return xattrs.document_xattrs(doc, parent, write.metadata)
        doc = self._document(inode)
        if doc is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return xattrs.document_xattrs(doc, self.catalog.directory_of(doc), {})

    @_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return xattrs.lookup(self._xattr_values(inode), name)

    @_boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return xattrs.names(self._xattr_values(inode))

    @_boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        await self._set_metadata(inode, xattrs.settable_key(name), xattrs.decode_value(value))

    @_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        await self._set_metadata(inode, xattrs.settable_key(name), None)

    async def _set_metadata(self, inode: int, key: str, value: str | None) -> None:
        if self._directory(inode) is not None or inode == ROOT_INO:
            raise pyfuse3.FUSEError(errno.EPERM)
        write = self.writes.get(inode)
        if write is not None and (write.dirty or write.document is None):
            write.metadata[key] = value  # applied when the file is finalized
            return
        try:
            updated = self.catalog.update_metadata(inode, **{key: value})
        except Conflict:
            raise pyfuse3.FUSEError(errno.EEXIST) from None
        if write is not None:
            write.document = updated
