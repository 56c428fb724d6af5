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
from collections.abc import Awaitable
from typing import Any, cast

import pyfuse3
import trio

from casfs import naming
from casfs.catalog import ROOT_INO
from casfs.errors import Conflict, InvalidName, NotFound
from casfs.records import Directory

from . import passthrough
from .attributes import access_allowed, version_key
from .boundary import handler
from .directories import DirectoryHandlers
from .files import Handle
from .open_files import OpenFile
from .xattr_handlers import XattrHandlers

log = logging.getLogger("casfs.mount")


def write_only(flags: int) -> bool:
    """Whether an open is for writing only, which the kernel then serves without its
    page cache (direct_io). Such a descriptor is never read or mapped, and its writes
    then cost one request each: in cached mode the kernel also asks for
    `security.capability` before every write (to clear set-uid bits), a second round
    trip per write that `cp` and `shutil.copyfile` paid (README, Performance)."""
    return flags & os.O_ACCMODE == os.O_WRONLY


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
        if self.absent.recent(parent_inode, text) and \
                self.files.named(parent_inode, text) is None:
            return self.attrs.absent()  # asked again by an exclusive create: absent_names.py
        attr = await self._child(parent_inode, text)
        if attr is None:
            directory = self.directories.get(parent_inode)  # _child kept it
            if directory is not None and directory.artifact_id is not None:
                self.absent.saw(parent_inode, text)
                return self.attrs.absent()  # kept by the kernel a moment, not counted
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._counted(attr)

    @handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._attr(inode)

    async def forget(self, inode_list: Any) -> None:
        for ino, count in inode_list:
            left = self.lookups.get(ino, 0) - count
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                self.cached.pop(ino, None)
                self.attrs.shown.pop(ino, None)

    @handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        if self.control.owns(inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        await self._settled(inode)  # `touch -d` right after a bulk load's close
        if inode == ROOT_INO or await self._directory(inode) is not None:
            if fields.update_mtime:  # touch -d, rsync -a, cp -a; mode and owner: not kept
                mtime_ns = attr.st_mtime_ns
                await self.write_catalog(lambda c: c.set_directory_mtime(inode, mtime_ns))
                self.directories.forget(inode)
                if inode == ROOT_INO:
                    self._root_mtime_ns = mtime_ns
            return await self._attr(inode)
        if fields.update_size:
            async with self.files.changing(inode) as changing:
                await self.files.truncate(changing, attr.st_size)
        if fields.update_mtime:
            file = self.files.get(inode)
            if file is not None:
                file.mtime_ns = attr.st_mtime_ns
            if file is None or not file.dirty:
                mtime_ns = attr.st_mtime_ns
                await self.write_catalog(lambda c: c.set_mtime(inode, mtime_ns))
        # Mode and ownership are accepted and not kept: blobs stay read-only in the
        # CAS, and what `cp -a` / `rsync -a` ask for must not fail.
        return await self._attr(inode)

    @handler
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        """access(2), as the kernel's own check of the modes would answer it (which
        the mount asks for only with allow_other: see daemon.py)."""
        return access_allowed((await self._attr(inode)).st_mode, mode, ctx.uid)

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
    def _new_handle(self, handle: Handle) -> int:
        if self.behind is not None:
            handle.failures_known = self.behind.failures_known()
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        return fh

    def _page_cache_valid(self, file: OpenFile) -> bool:
        """Whether the kernel's cached pages of the inode are this file's bytes, and
        remember that they will be from now on."""
        key = None if file.document is None else version_key(file.document)
        valid = key is not None and self.cached.get(file.ino) == key
        if key is None:
            self.cached.pop(file.ino, None)
        else:
            self.cached[file.ino] = key
        return valid

    async def _drop_stale_size(self, file: OpenFile) -> None:
        """At the first open of an inode here: when this version is other than the one
        the kernel has attributes of (written by another mount, host or tool), the
        kernel's size is stale: drop it, or reads stop at the old size or run past the
        new one."""
        assert file.document is not None
        shown = self.attrs.shown.get(file.ino)
        if shown is None or shown == version_key(file.document):
            return
        self.attrs.shown[file.ino] = version_key(file.document)
        await trio.to_thread.run_sync(pyfuse3.invalidate_inode, file.ino, True)

    @handler
    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if self.control.owns(inode):
            if writable:
                raise pyfuse3.FUSEError(errno.EACCES)
            info = pyfuse3.FileInfo(fh=self._new_handle(Handle(
                inode, False, content=self.control.content(inode))))
            info.direct_io = True  # generated: its size is not known to the kernel
            return info
        if writable:
            self._writable()
        try:
            file, made = await self.files.open(inode, for_writing=writable)
        except pyfuse3.FUSEError as e:
            if e.errno == errno.ENOENT and await self._directory(inode) is not None:
                raise pyfuse3.FUSEError(errno.EISDIR) from None
            raise
        try:
            if made:
                await self._drop_stale_size(file)
            if writable and flags & os.O_TRUNC:
                async with self.files.hold(file):
                    await self.files.truncate(file, 0)
        except BaseException:
            self.files.release(file)
            raise
        fh = self._new_handle(Handle(inode, writable))
        info = pyfuse3.FileInfo(fh=fh)
        if not writable and self.files.passthrough.serve(file, fh):
            return info  # the kernel reads the blob itself; last, nothing may fail now
        # Blobs never change, so cached pages stay good while they are this version's.
        info.keep_cache = not made or self._page_cache_valid(file)
        # A blob still arriving from object storage, or a cached one still being
        # checked, is read with direct I/O: each read goes to the daemon (which waits
        # for its bytes) and into the reader's buffer, without filling the kernel's
        # page cache of the file (README, "Blobs in S3"), which so never holds bytes
        # the check may yet reject. Only where the kernel lets such files be mapped.
        info.direct_io = write_only(flags) or (
            not writable and file.settling and passthrough.direct_io_may_mmap())
        return info

    @handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        self._writable()
        text = naming.check_component(name)
        if not stat.S_ISREG(mode):
            raise self._refuse("create of a non-regular file", errno.EPERM)
        directory = await self._artifact_dir(parent_inode, "create")
        # The kernel looks a name up before it creates it: asked again only when that
        # answer is not fresh (the registration at close settles a race either way).
        existing = None if self.absent.fresh(parent_inode, text) and \
            self.files.named(parent_inode, text) is None else \
            await self._child(parent_inode, text)
        if existing is not None:
            if flags & os.O_EXCL:
                raise pyfuse3.FUSEError(errno.EEXIST)
            info = await self.open(existing.st_ino, flags, ctx)
            return info, self._counted(await self._attr(existing.st_ino))
        file = await self.files.create(await self.write_catalog.new_ino(), directory.ino, text)
        file.open_handles = 1
        self.cached.pop(file.ino, None)
        info = pyfuse3.FileInfo(fh=self._new_handle(Handle(file.ino, True)))
        info.direct_io = write_only(flags)
        return info, self._counted(self.attrs.open_file(file))

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        if handle.content is not None:
            return handle.content[off:off + size]
        self.reads += 1
        file = self.files.get(handle.ino)
        if file is None:  # cannot happen while the handle is open
            raise pyfuse3.FUSEError(errno.EBADF)
        # pyfuse3 replies from any contiguous buffer (its stubs say bytes): a view of
        # what a fill just received goes to the kernel without a copy here.
        return cast(bytes, await file.read(size, off))

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        file = self.files.get(handle.ino)
        if file is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        async with self.files.hold(file):
            return await self.files.write(file, buf, off)

    async def _finalizing(self, file: OpenFile, change: Awaitable[None]) -> None:
        """Await a change that may finalize `file`; when finalizing fails, the file is
        back at its last version, so the kernel must drop what it has of the lost one."""
        try:
            await change
        except pyfuse3.FUSEError:
            if not file.dirty:
                self.cached.pop(file.ino, None)
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, file.ino, False)
            raise
        if file.document is not None and not file.dirty:
            # The kernel's pages of this inode are the bytes just registered.
            self.cached[file.ino] = self.attrs.shown[file.ino] = version_key(file.document)

    def _writing(self, fh: int) -> OpenFile | None:
        """The open file a writable descriptor writes, if any."""
        handle = self.handles.get(fh)
        return self.files.get(handle.ino) if handle and handle.writable else None

    async def finalize(self, file: OpenFile) -> None:
        """Store and register `file`'s staged bytes, if any, under its lock: for a
        flush, an fsync, a link, and a bulk load's close behind it (closes_behind.py)."""
        async with self.files.hold(file):
            await self._finalizing(file, self.files.finalize(file))

    @handler
    async def flush(self, fh: int) -> None:
        file = self._writing(fh)
        if file is None:
            return
        if self.behind is not None:
            if self.behind.take(file):
                return
            await self.behind.settle(file.ino)
        await self.finalize(file)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        file = self._writing(fh)
        if file is not None:
            await self.finalize(file)
        if self.durability is not None:  # a bulk load: durable only after a round
            await self.durability.durable()
        handle = self.handles.get(fh)
        if self.behind is not None and handle is not None and \
                self.behind.failures_since(handle.failures_known):
            handle.failures_known = self.behind.failed
            raise pyfuse3.FUSEError(errno.EIO)  # as a failed writeback is reported

    @handler
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        file = self.files.get(handle.ino) if handle.content is None else None
        if file is not None:
            self.files.release(file)

    # -- names: unlink, rename, link ---------------------------------------------
    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        if self.control.owns(parent_inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        text = naming.check_component(name)
        file = self.files.named(parent_inode, text)
        if file is not None:
            await self._settled(file.ino)
            if file.document is not None:
                ino = file.ino
                await self.write_catalog(lambda c: c.unlink_document(ino))
            self.files.unlinked(file)
            return
        directory = await self._directory(parent_inode)
        doc = await self.query(lambda c: c.lookup_document(directory, text)) if directory and \
            directory.artifact_id is not None else None
        if doc is None:
            raise pyfuse3.FUSEError(errno.EISDIR if await self._child(parent_inode, text)
                                    else errno.ENOENT)
        await self.write_catalog(lambda c: c.unlink_document(doc.ino))
        file = self.files.get(doc.ino)
        if file is not None:  # open here for reading only: it stays readable until closed
            self.files.unlinked(file)

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
        source_dir = await self.query(lambda c: c.lookup_directory(parent_inode_old, old))
        if source_dir is not None:
            await self._rename_directory(source_dir, parent_inode_new, new, noreplace)
            return
        source = await self._child(parent_inode_old, old)
        if source is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        await self._settled(source.st_ino)
        target_dir = await self._artifact_dir(parent_inode_new, "rename of a file")
        target = await self._child(parent_inode_new, new)
        if target is not None and target.st_ino != source.st_ino:
            if noreplace:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if stat.S_ISDIR(target.st_mode):
                raise pyfuse3.FUSEError(errno.EISDIR)
            await self.unlink(parent_inode_new, name_new, ctx)
        file = self.files.get(source.st_ino)
        if file is None or file.document is not None:
            ino = source.st_ino
            await self.write_catalog(
                lambda c: c.rename_document(ino, target_dir, new, replace=False))
        if file is not None and file.parent_ino is not None:
            self.files.move(file, target_dir.ino, new)
        self.absent.forget(target_dir.ino, new)

    async def _rename_directory(self, source: Directory, parent_new: int, new: str,
                                noreplace: bool) -> None:
        target = await self.query(lambda c: c.lookup_directory(parent_new, new))
        if target is not None and target.ino != source.ino:
            if noreplace:
                raise pyfuse3.FUSEError(errno.EEXIST)
            try:
                await self.write_catalog(  # only an empty one may be replaced
                    lambda c: c.remove_directory(target.ino))
                self.directories.forget()
            except Conflict:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY) from None
        try:
            await self.write_catalog(lambda c: c.rename_directory(source.ino, parent_new, new))
            self.directories.forget()
        except NotFound:
            raise self._refuse("rename of a directory to another depth", errno.EPERM) from None

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        text = naming.check_component(new_name)
        directory = await self._artifact_dir(new_parent_inode, "link")
        if await self._child(new_parent_inode, text) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        file = self.files.get(inode)
        if file is not None:
            await self._settled(inode)
            await self.finalize(file)
        linked = await self.write_catalog(lambda c: c.link_document(inode, directory, text))
        self.absent.forget(directory.ino, text)
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
