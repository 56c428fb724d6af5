"""The pyfuse3 handlers: the tree /<resolver>/<artifact_id>/<basename> over a store.

Depth 1 and 2 are directories from the catalog's `directories` table, depth 3 are
documents. Reads come from blobs; writes go through `Writes` (staged, finalized on
flush/fsync through the one ingest path); `/.casfs` is the mount's own directory
(`Control`). Every handler is wrapped by `boundary.handler`: only a FUSEError can
leave one. This module has the handlers for names, attributes and files; the
directory and xattr handlers and the shared state are in their own modules.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Any

import pyfuse3
import trio

from casfs import naming
from casfs.errors import Conflict, InvalidName, NotFound
from casfs.records import Directory
from casfs.schema import ROOT_INO

from .boundary import handler
from .directories import DirectoryHandlers
from .files import Handle
from .xattr_handlers import XattrHandlers

log = logging.getLogger("casfs.mount")


class CasfsOperations(DirectoryHandlers, XattrHandlers):
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
