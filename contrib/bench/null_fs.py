"""A FUSE filesystem that does nothing but answer: the floor of what a request
through pyfuse3 and trio costs on this machine.

    .venv/bin/python contrib/bench/null_fs.py MOUNTPOINT

It keeps names, sizes and times in memory and no bytes (a read returns zeros), and
it mounts as casfs does (no `default_permissions`, names and attributes kept by the
kernel for 300 s, as the benchmarks mount casfs; write-only opens with direct I/O).
So a writer sends it the very requests it sends casfs, and each is answered at
once. `request_floor.py` runs small files through it beside casfs: no filesystem
written with pyfuse3 here writes small files faster than this one. It serves in the
foreground until unmounted (`fusermount3 -u MOUNTPOINT`).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

TIMEOUT_S = 300.0


@dataclass
class Node:
    mode: int
    size: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)
    children: dict[bytes, int] = field(default_factory=dict)


class NullOperations(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: Node(stat.S_IFDIR | 0o755)}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.handles: dict[int, int] = {}  # fh -> inode
        self.next_fh = 1

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self.nodes[ino]
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = node.mode
        attr.st_nlink = 2 if stat.S_ISDIR(node.mode) else 1
        attr.st_uid, attr.st_gid = os.getuid(), os.getgid()
        attr.st_size = node.size
        attr.st_blksize = 1 << 20
        attr.st_blocks = (node.size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = node.mtime_ns
        attr.entry_timeout = attr.attr_timeout = TIMEOUT_S
        return attr

    def _add(self, parent: int, name: bytes, mode: int) -> int:
        if name in self.nodes[parent].children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        self.nodes[ino] = Node(mode)
        self.nodes[parent].children[name] = ino
        return ino

    def _handle(self, ino: int) -> int:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.handles[fh] = ino
        return fh

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        ino = self.nodes[parent_inode].children.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext
                      ) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.nodes[inode]
        if fields.update_size:
            node.size = attr.st_size
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return self._attr(inode)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._add(parent_inode, name, stat.S_IFDIR | 0o755))

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        ino = self._add(parent_inode, name, stat.S_IFREG | 0o644)
        info = pyfuse3.FileInfo(fh=self._handle(ino))
        info.direct_io = flags & os.O_ACCMODE == os.O_WRONLY  # as casfs
        return info, self._attr(ino)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        if flags & os.O_TRUNC:
            self.nodes[inode].size = 0
        info = pyfuse3.FileInfo(fh=self._handle(inode))
        info.direct_io = flags & os.O_ACCMODE == os.O_WRONLY
        return info

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(max(0, min(size, self.nodes[self.handles[fh]].size - off)))

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.nodes[self.handles[fh]]
        node.size = max(node.size, off + len(buf))
        node.mtime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = list(self.nodes[fh].children.items())
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        pass

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = data.f_bfree = data.f_bavail = 1 << 30
        data.f_files = data.f_ffree = data.f_favail = 1 << 30
        data.f_namemax = 255
        return data


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    options = {"fsname=nullfs", "subtype=null"}
    pyfuse3.init(NullOperations(), sys.argv[1], options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
