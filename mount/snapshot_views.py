"""Snapshots inside a live mount: `/.casfs/snapshots/NAME/...`, read-only.

Each snapshot's tree is served by an operations object of its own, the same code
as a `mount --at` of the snapshot's moment (a catalog connection showing it; see
casfs/catalog/past.py). This router stands in front of the live operations and the
views: the kernel knows one inode space, so each view gets a range of its own
(VIEWS + index << SHIFT) and the router moves inodes, handles and directory
positions into a view's range on the way out and back on the way in. A document
has different bytes at different moments; with inodes of their own, the kernel
never serves one moment's cached pages for another.

Views are made at their first use and kept until unmount (a deleted snapshot's
view keeps serving what is open in it, and its name no longer resolves).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Callable
from typing import Any

import pyfuse3

from casfs.catalog import ROOT_INO
from casfs.records import Snapshot

from . import control
from .boundary import handler
from .operations import CasfsOperations

VIEWS = 1 << 60  # below the mount's own /.casfs inodes (1 << 62)
SHIFT = 40  # a view's range: 2**40 inode numbers and handle numbers
MakeView = Callable[[Snapshot], CasfsOperations]


class SnapshotViews(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, live: CasfsOperations, make_view: MakeView) -> None:
        super().__init__()
        self.live = live
        self._make_view = make_view
        self._index: dict[str, int] = {}  # snapshot name -> its range, for the mount's life
        self._views: dict[int, CasfsOperations] = {}

    # -- inode ranges -------------------------------------------------------------
    def _view_of(self, number: int) -> tuple[CasfsOperations, int, int]:
        """(the operations serving an inode or handle number, the number as they know
        it, the offset of their range)."""
        if VIEWS <= number < control.DIR_INO:
            index = (number - VIEWS) >> SHIFT
            view = self._views.get(index)
            if view is None:  # a number from before a restart, or made up
                raise pyfuse3.FUSEError(errno.ESTALE)
            base = VIEWS + (index << SHIFT)
            return view, number - base, base
        return self.live, number, 0

    def _range(self, name: str) -> int:
        if name not in self._index:
            self._index[name] = len(self._index)
        return VIEWS + (self._index[name] << SHIFT)

    async def _snapshot_view(self, name: str) -> tuple[CasfsOperations, int] | None:
        snapshot = await self.live.query(lambda c: c.snapshot(name))
        if snapshot is None:
            return None
        base = self._range(name)
        index = (base - VIEWS) >> SHIFT
        if index not in self._views:
            view = self._make_view(snapshot)
            view.readdir_reply = _shifted_reply(base)
            self._views[index] = view
        return self._views[index], base

    def close(self) -> None:
        for view in self._views.values():
            view.query.close()
            view.store.close()

    # -- names and attributes -------------------------------------------------------
    @handler
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if parent_inode == control.SNAPSHOTS_INO:
            found = await self._snapshot_view(name.decode(errors="replace"))
            if found is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            view, base = found
            return _shift(await view.getattr(ROOT_INO, ctx), base)
        ops, ino, base = self._view_of(parent_inode)
        return _shift(await ops.lookup(ino, name, ctx), base)

    @handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        ops, ino, base = self._view_of(inode)
        return _shift(await ops.getattr(ino, ctx), base)

    async def forget(self, inode_list: Any) -> None:
        by_view: dict[int, tuple[CasfsOperations, list[tuple[int, int]]]] = {}
        for ino, count in inode_list:
            try:
                ops, real, _ = self._view_of(ino)
            except pyfuse3.FUSEError:
                continue
            by_view.setdefault(id(ops), (ops, []))[1].append((real, count))
        for ops, inos in by_view.values():
            await ops.forget(inos)

    @handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        ops, ino, base = self._view_of(inode)
        return _shift(await ops.setattr(ino, attr, fields, None if fh is None else fh - base,
                                        ctx), base)

    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        ops, ino, _ = self._view_of(inode)
        return await ops.access(ino, mode, ctx)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return await self.live.statfs(ctx)

    # -- directories ----------------------------------------------------------------
    @handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode == control.SNAPSHOTS_INO:
            return inode
        ops, ino, base = self._view_of(inode)
        return await ops.opendir(ino, ctx) + base

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if fh == control.SNAPSHOTS_INO:
            await self._list_snapshots(start_id, token)
            return
        ops, real_fh, base = self._view_of(fh)
        await ops.readdir(real_fh, start_id - base if start_id >= base else 0, token)

    async def _list_snapshots(self, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Every snapshot, as a directory; positions are their ranges' root inodes."""
        snapshots = await self.live.query(lambda c: c.snapshots())
        entries = sorted((self._range(s.name) + ROOT_INO, s) for s in snapshots)
        for ino, snapshot in entries:
            if ino <= start_id:
                continue
            attr = self.live.attrs.directory(ino, math.floor(snapshot.at * 1e9))
            if not pyfuse3.readdir_reply(token, snapshot.name.encode(), attr, ino):
                return

    # -- files --------------------------------------------------------------------------
    @handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        ops, ino, base = self._view_of(inode)
        info = await ops.open(ino, flags, ctx)
        info.fh += base
        return info

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        ops, real_fh, _ = self._view_of(fh)
        return await ops.read(real_fh, off, size)

    @handler
    async def flush(self, fh: int) -> None:
        ops, real_fh, _ = self._view_of(fh)
        await ops.flush(real_fh)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        ops, real_fh, _ = self._view_of(fh)
        await ops.fsync(real_fh, datasync)

    @handler
    async def release(self, fh: int) -> None:
        ops, real_fh, _ = self._view_of(fh)
        await ops.release(real_fh)

    # -- extended attributes ----------------------------------------------------------
    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        ops, ino, _ = self._view_of(inode)
        return await ops.getxattr(ino, name, ctx)

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        ops, ino, _ = self._view_of(inode)
        return await ops.listxattr(ino, ctx)

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        ops, ino, _ = self._view_of(inode)
        await ops.setxattr(ino, name, value, ctx)

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        ops, ino, _ = self._view_of(inode)
        await ops.removexattr(ino, name, ctx)

    # -- changes: only the live tree takes them -------------------------------------------
    def _live(self, *inodes: int) -> CasfsOperations:
        """The live operations, when every inode is theirs; else EROFS (a snapshot's
        tree, or the list of snapshots, is read-only)."""
        for ino in inodes:
            if ino == control.SNAPSHOTS_INO or VIEWS <= ino < control.DIR_INO:
                raise pyfuse3.FUSEError(errno.EROFS)
        return self.live

    @handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        return await self._live(parent_inode).create(parent_inode, name, mode, flags, ctx)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._live(fh).write(fh, off, buf)

    @handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._live(parent_inode).mkdir(parent_inode, name, mode, ctx)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._live(parent_inode).rmdir(parent_inode, name, ctx)

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._live(parent_inode).unlink(parent_inode, name, ctx)

    @handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self._live(parent_inode_old, parent_inode_new).rename(
            parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._live(inode, new_parent_inode).link(inode, new_parent_inode,
                                                               new_name, ctx)

    @handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._live(parent_inode).symlink(parent_inode, name, target, ctx)

    @handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._live(parent_inode).mknod(parent_inode, name, mode, rdev, ctx)


def _shift(attr: pyfuse3.EntryAttributes, base: int) -> pyfuse3.EntryAttributes:
    attr.st_ino += base
    return attr


def _shifted_reply(base: int) -> Callable[[pyfuse3.ReaddirToken, bytes,
                                           pyfuse3.EntryAttributes, int], bool]:
    """readdir_reply for a view: the entry's inode and position in the view's range
    (the view keeps its own numbers in the attributes it made)."""
    def reply(token: pyfuse3.ReaddirToken, name: bytes, attr: pyfuse3.EntryAttributes,
              next_id: int) -> bool:
        attr.st_ino += base
        try:
            return bool(pyfuse3.readdir_reply(token, name, attr, next_id + base))
        finally:
            attr.st_ino -= base
    return reply
