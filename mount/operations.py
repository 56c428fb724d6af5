"""The pyfuse3 handlers: the tree /<resolver>/<artifact_id>/<basename> over a store.

Depth 1 and 2 are directories from the catalog's `directories` table, depth 3 are
documents. Reads come from blobs; writes go through `Writes` (staged, finalized on
flush/fsync through the one ingest path); `/.casfs` is the mount's own directory
(`Control`). Every handler is wrapped by `boundary.handler`: only a FUSEError can
leave one.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Any

import pyfuse3
import trio

from casfs import naming
from casfs.errors import Conflict, InvalidName, NotFound
from casfs.records import Directory, Document
from casfs.schema import ROOT_INO
from casfs.store import Store

from . import control, xattrs
from .attributes import Attributes
from .boundary import handler
from .catalog_writer import CatalogWriter
from .control import Control
from .files import Handle
from .writes import OpenWrite, Writes

log = logging.getLogger("casfs.mount")

READDIR_PAGE = 500


class CasfsOperations(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, store: Store, writer: CatalogWriter | None, *, readonly: bool,
                 cache_timeout: float, xattrs: bool = True) -> None:
        super().__init__()
        self.store = store
        self.xattrs = xattrs
        self.catalog = store.catalog
        self.readonly = readonly
        self.attrs = Attributes(readonly=readonly, cache_timeout=cache_timeout)
        # A read-only mount has no writer: every writing handler refuses first.
        self._writer = writer
        self.writes = Writes(store, writer)
        self.control = Control(store, self.attrs, self._gauges)
        self.control.started_ns = time.time_ns()
        self.handles: dict[int, Handle] = {}
        self.lookups: dict[int, int] = {}
        self.opened_sha: dict[int, str] = {}  # what the kernel may hold in its page cache
        self._next_fh = 1
        self._refused: set[str] = set()

    def _gauges(self) -> list[tuple[str, str, float]]:
        return [("casfs_mount_open_files", "Files open for writing in this mount.",
                 len(self.writes.by_ino)),
                ("casfs_mount_known_inodes", "Inodes the kernel holds references to.",
                 len(self.lookups))]

    # -- helpers ----------------------------------------------------------------
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

    def _writable(self) -> None:
        if self.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)

    def _directory(self, ino: int) -> Directory | None:
        if ino == ROOT_INO or self.control.owns(ino):
            return None
        return self.catalog.get_directory(ino)

    def _artifact_dir(self, ino: int, what: str) -> Directory:
        """The artifact directory `ino`, or EPERM: files live only at depth 3."""
        directory = self._directory(ino)
        if directory is None and ino != ROOT_INO and self.catalog.get_document(ino):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if directory is None or directory.artifact_id is None:
            raise self._refuse(f"{what} outside an artifact directory", errno.EPERM)
        return directory

    def _counted(self, attr: pyfuse3.EntryAttributes) -> pyfuse3.EntryAttributes:
        self.lookups[attr.st_ino] = self.lookups.get(attr.st_ino, 0) + 1
        return attr

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        if ino == ROOT_INO:
            return self.attrs.directory(ROOT_INO, 0)
        if self.control.owns(ino):
            return self.control.attr(ino)
        write = self.writes.get(ino)
        if write is not None:
            return self.attrs.open_write(write)
        doc = self.catalog.get_document(ino)
        if doc is not None:
            return self.attrs.document(doc)
        directory = self._directory(ino)
        if directory is not None:
            return self.attrs.directory(ino, directory.mtime_ns)
        raise pyfuse3.FUSEError(errno.ENOENT)

    def _child(self, parent_ino: int, name: str) -> pyfuse3.EntryAttributes | None:
        """The attributes of `name` in `parent_ino`, or None when there is none."""
        write = self.writes.named(parent_ino, name)
        if write is not None:
            return self.attrs.open_write(write)
        if self.control.owns(parent_ino) or (parent_ino == ROOT_INO and name == control.NAME):
            return self.control.lookup(parent_ino, name)
        directory = self._directory(parent_ino)
        if parent_ino == ROOT_INO or (directory and directory.artifact_id is None):
            child = self.catalog.lookup_directory(parent_ino, name)
            return self.attrs.directory(child.ino, child.mtime_ns) if child else None
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self.catalog.get_document(parent_ino)
                                    else errno.ENOENT)
        doc = self.catalog.lookup_document(directory, name)
        return self.attrs.document(doc) if doc else None

    # -- names and attributes ----------------------------------------------------
    @handler
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
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

    @handler
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

    @handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        if self.control.owns(inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        if inode == ROOT_INO or self._directory(inode) is not None:
            return self._attr(inode)  # chmod/chown/utimens on a directory: accepted, not kept
        if fields.update_size:
            async with self.writes.changing(inode) as changing:
                await self.writes.truncate(changing, attr.st_size)
        if fields.update_mtime:
            write = self.writes.get(inode)
            if write is not None:
                write.mtime_ns = attr.st_mtime_ns
            if write is None or not write.dirty:
                mtime_ns = attr.st_mtime_ns
                await self.write_catalog(lambda c: c.set_mtime(inode, mtime_ns))
        # Mode and ownership are accepted and not kept: blobs stay read-only in the
        # CAS, and what `cp -a` / `rsync -a` ask for must not fail.
        return self._attr(inode)

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.store.layout.root)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                     "f_files", "f_ffree", "f_favail"):
            setattr(data, name, getattr(st, name))
        data.f_namemax = naming.NAME_MAX
        return data

    # -- directories ------------------------------------------------------------
    @handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode in (ROOT_INO, control.DIR_INO):
            return inode
        if self.control.owns(inode) or self._directory(inode) is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self.control.owns(inode)
                                    or self.catalog.get_document(inode) else errno.ENOENT)
        return inode

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """List a directory in pages by inode, resuming after `start_id` (the last inode)."""
        if self.control.owns(fh):
            for name, attr in self.control.entries():
                if attr.st_ino > start_id and pyfuse3.readdir_reply(
                        token, name.encode(), attr, attr.st_ino):
                    self._counted(attr)
            return
        directory = self._directory(fh)
        after = start_id
        while True:
            entries: list[tuple[str, pyfuse3.EntryAttributes]]
            if directory is None or directory.artifact_id is None:
                dirs = self.catalog.list_directories(fh, after, READDIR_PAGE)
                full = len(dirs) == READDIR_PAGE
                entries = [(d.name, self.attrs.directory(d.ino, d.mtime_ns)) for d in dirs]
            else:
                docs = self.catalog.list_documents(directory, after, READDIR_PAGE)
                full = len(docs) == READDIR_PAGE
                entries = self._with_open_writes(fh, docs, after, full)
            for name, attr in entries:
                if not pyfuse3.readdir_reply(token, name.encode(), attr, attr.st_ino):
                    return
                self._counted(attr)
                after = attr.st_ino
            if not full:
                return

    def _with_open_writes(self, dir_ino: int, docs: list[Document], after: int,
                          full: bool) -> list[tuple[str, pyfuse3.EntryAttributes]]:
        """Catalog entries of a page plus files open for writing in the same inode range."""
        last = docs[-1].ino if full else None
        entries = {d.ino: (d.basename, self.attrs.document(d)) for d in docs
                   if self.writes.get(d.ino) is None}
        for w in self.writes.in_directory(dir_ino):
            if w.ino > after and (last is None or w.ino <= last):
                entries[w.ino] = (w.name, self.attrs.open_write(w))
        return [entries[ino] for ino in sorted(entries)]

    @handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        text = naming.check_component(name)
        parent = self._directory(parent_inode)
        if parent_inode != ROOT_INO and (parent is None or parent.artifact_id is not None):
            raise self._refuse("mkdir below an artifact directory", errno.EPERM)
        if parent_inode == ROOT_INO and text in naming.RESERVED_ROOT_NAMES:
            raise pyfuse3.FUSEError(errno.EPERM)
        created = await self.write_catalog(lambda c: c.make_directory(parent_inode, text))
        return self._counted(self.attrs.directory(created.ino, created.mtime_ns))

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        text = naming.check_component(name)
        directory = self.catalog.lookup_directory(parent_inode, text)
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self._child(parent_inode, text)
                                    else errno.ENOENT)
        if self.writes.in_directory(directory.ino):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        try:
            await self.write_catalog(lambda c: c.remove_directory(directory.ino))
        except Conflict:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY) from None

    # -- files: open, read, write, close -----------------------------------------
    def _new_handle(self, handle: Handle) -> pyfuse3.FileInfo:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        info = pyfuse3.FileInfo(fh=fh)
        if handle.content is not None:
            info.direct_io = True  # generated: its size is not known to the kernel
            return info
        # Blobs never change, so the kernel may keep cached pages, unless this inode
        # now shows other bytes than when it was last opened.
        info.keep_cache = handle.sha256 is not None and \
            self.opened_sha.get(handle.ino) == handle.sha256
        if handle.sha256 is not None:
            self.opened_sha[handle.ino] = handle.sha256
        else:
            self.opened_sha.pop(handle.ino, None)
        return info

    @handler
    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if self.control.owns(inode):
            if writable:
                raise pyfuse3.FUSEError(errno.EACCES)
            return self._new_handle(Handle(inode, False, None,
                                           content=self.control.content(inode)))
        write = self.writes.get(inode)
        if not writable:
            if write is not None and write.dirty:
                return self._new_handle(Handle(inode, False, None))
            doc = write.document if write else self.catalog.get_document(inode)
            if doc is None:
                raise pyfuse3.FUSEError(errno.EISDIR if self._directory(inode) else errno.ENOENT)
            return self._new_handle(Handle(inode, False, doc.sha256))
        self._writable()
        write = self.writes.open(inode)
        write.open_handles += 1  # before any await: a release meanwhile must not forget it
        try:
            if flags & os.O_TRUNC:
                async with self.writes.hold(write):
                    await self.writes.truncate(write, 0)
        except BaseException:
            self.writes.release(write)
            raise
        sha = None if write.dirty or write.document is None else write.document.sha256
        return self._new_handle(Handle(inode, True, sha))

    @handler
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
        write = self.writes.create(await self.write_catalog.new_ino(), directory.ino, text)
        write.open_handles = 1
        info = self._new_handle(Handle(write.ino, True, None))
        return info, self._counted(self.attrs.open_write(write))

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        if handle.content is not None:
            return handle.content[off:off + size]
        write = self.writes.get(handle.ino)
        if write is not None and write.staging is not None:
            return await trio.to_thread.run_sync(write.staging.read, size, off)
        if handle.sha256 is None:  # opened while dirty; finalized since
            doc = write.document if write else self.catalog.get_document(handle.ino)
            if doc is None:
                return b""
            handle.sha256 = doc.sha256
        if handle.blob_fd < 0:
            try:
                handle.blob_fd = self.store.blobs.open_blob(handle.sha256)
            except FileNotFoundError:
                log.error("blob %s of inode %d is missing (run casfs fsck)",
                          handle.sha256, handle.ino)
                raise pyfuse3.FUSEError(errno.EIO) from None
        return await trio.to_thread.run_sync(os.pread, handle.blob_fd, size, off)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        async with self.writes.hold(self.writes.open(handle.ino)) as write:
            return await self.writes.write(write, buf, off)

    async def _finalize_handle(self, fh: int) -> None:
        handle = self.handles.get(fh)
        write = self.writes.get(handle.ino) if handle and handle.writable else None
        if write is not None:
            async with self.writes.hold(write):
                await self.writes.finalize(write)

    @handler
    async def flush(self, fh: int) -> None:
        await self._finalize_handle(fh)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._finalize_handle(fh)

    @handler
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle.blob_fd >= 0:
            os.close(handle.blob_fd)
        write = self.writes.get(handle.ino) if handle.writable else None
        if write is not None:
            self.writes.release(write)

    # -- names: unlink, rename, link ---------------------------------------------
    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        if self.control.owns(parent_inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        text = naming.check_component(name)
        write = self.writes.named(parent_inode, text)
        if write is not None:
            write.unlinked = True
            self.writes.drop_name(write)
            if write.document is not None:
                await self.write_catalog(lambda c: c.unlink_document(write.ino))
            return
        directory = self._directory(parent_inode)
        doc = self.catalog.lookup_document(directory, text) if directory and \
            directory.artifact_id is not None else None
        if doc is None:
            raise pyfuse3.FUSEError(errno.EISDIR if self._child(parent_inode, text)
                                    else errno.ENOENT)
        await self.write_catalog(lambda c: c.unlink_document(doc.ino))

    @handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise self._refuse("rename with RENAME_EXCHANGE", errno.EINVAL)
        if self.control.owns(parent_inode_old) or self.control.owns(parent_inode_new):
            raise pyfuse3.FUSEError(errno.EPERM)
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
            ino = source.st_ino
            await self.write_catalog(
                lambda c: c.rename_document(ino, target_dir, new, replace=False))
        if write is not None:
            self.writes.move(write, target_dir.ino, new)

    async def _rename_directory(self, source: Directory, parent_new: int, new: str,
                                noreplace: bool) -> None:
        target = self.catalog.lookup_directory(parent_new, new)
        if target is not None and target.ino != source.ino:
            if noreplace:
                raise pyfuse3.FUSEError(errno.EEXIST)
            try:
                await self.write_catalog(  # only an empty one may be replaced
                    lambda c: c.remove_directory(target.ino))
            except Conflict:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY) from None
        try:
            await self.write_catalog(lambda c: c.rename_directory(source.ino, parent_new, new))
        except NotFound:
            raise self._refuse("rename of a directory to another depth", errno.EPERM) from None

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        text = naming.check_component(new_name)
        directory = self._artifact_dir(new_parent_inode, "link")
        if self._child(new_parent_inode, text) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        write = self.writes.get(inode)
        if write is not None:
            async with self.writes.hold(write):
                await self.writes.finalize(write)
        linked = await self.write_catalog(lambda c: c.link_document(inode, directory, text))
        return self._counted(self.attrs.document(linked))

    @handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        raise self._refuse("symlink", errno.EPERM)

    @handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        raise self._refuse("mknod (devices, fifos, sockets)", errno.EPERM)

    # -- extended attributes ------------------------------------------------------
    def _xattr_values(self, inode: int) -> dict[str, str]:
        if inode == ROOT_INO or self.control.owns(inode):
            return {}
        directory = self._directory(inode)
        if directory is not None:
            return xattrs.directory_xattrs(directory)
        write = self.writes.get(inode)
        if write is not None:
            parent = self.catalog.get_directory(write.parent_ino)
            if parent is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return xattrs.document_xattrs(None if write.dirty else write.document, parent,
                                          write.metadata)
        doc = self.catalog.get_document(inode)
        if doc is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return xattrs.document_xattrs(doc, self.catalog.directory_of(doc), {})

    def _xattrs_on(self) -> None:
        """With -o noxattr, ENOSYS: the kernel then stops asking, for the whole mount
        (and `ls -l` stops paying two round trips per entry)."""
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._xattrs_on()
        if not name.startswith(xattrs.PREFIX_BYTES):
            # ls -l asks every entry for security.selinux and system.posix_acl_access,
            # and FUSE caches no answer: answer without touching the catalog.
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return xattrs.lookup(self._xattr_values(inode), name)

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._xattrs_on()
        return xattrs.names(self._xattr_values(inode))

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_on()
        self._writable()
        await self._set_metadata(inode, xattrs.settable_key(name), xattrs.decode_value(value))

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_on()
        self._writable()
        await self._set_metadata(inode, xattrs.settable_key(name), None)

    async def _set_metadata(self, inode: int, key: str, value: str | None) -> None:
        if inode == ROOT_INO or self.control.owns(inode) or self._directory(inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        write: OpenWrite | None = self.writes.get(inode)
        if write is not None and (write.dirty or write.document is None):
            write.metadata[key] = value  # applied when the file is finalized
            return
        updated = await self.write_catalog(
            lambda c: c.update_metadata(inode, **{key: value}))
        if write is not None:
            write.document = updated
