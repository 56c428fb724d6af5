"""Entry attributes: what stat shows for directories, documents and open files."""

from __future__ import annotations

import os
import stat
import time

import pyfuse3

from casfs.records import Document

from .writes import OpenWrite


class Attributes:
    def __init__(self, *, readonly: bool, cache_timeout: float) -> None:
        self.readonly = readonly
        self.cache_timeout = cache_timeout
        self.uid, self.gid = os.getuid(), os.getgid()

    def _base(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = mode
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_blksize = 1 << 17
        attr.entry_timeout = attr.attr_timeout = self.cache_timeout
        return attr

    def directory(self, ino: int, mtime_ns: int) -> pyfuse3.EntryAttributes:
        attr = self._base(ino, stat.S_IFDIR | (0o555 if self.readonly else 0o755))
        attr.st_nlink = 2
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime_ns
        return attr

    def file(self, ino: int, size: int, mtime_ns: int, ctime: float,
             read_only: bool = False) -> pyfuse3.EntryAttributes:
        mode = 0o444 if self.readonly or read_only else 0o644
        attr = self._base(ino, stat.S_IFREG | mode)
        attr.st_nlink = 1
        attr.st_size = size
        attr.st_blocks = (size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = mtime_ns
        attr.st_ctime_ns = int(ctime * 1e9)
        return attr

    def document(self, doc: Document) -> pyfuse3.EntryAttributes:
        return self.file(doc.ino, doc.bytes, doc.mtime_ns, doc.updated_at)

    def open_write(self, write: OpenWrite) -> pyfuse3.EntryAttributes:
        return self.file(write.ino, write.size, write.mtime_ns, time.time())
