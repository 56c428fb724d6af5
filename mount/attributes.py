"""Entry attributes: what stat shows for directories, documents and open files.

`Attributes` also remembers which version of each document the kernel was last
shown (`shown`), so that an open can tell when the kernel holds a size that is no
longer the file's and must be told to drop it (see `OperationsBase._open_file`).
"""

from __future__ import annotations

import os
import stat
import time

import pyfuse3

from casfs.records import Document

from .open_files import OpenFile

# How long the kernel may remember that a name is absent from an artifact directory.
# `cp` looks a new name up three times before it creates it (its checks, then the
# open): answered once, the other two stay in the kernel. Short, because a name made
# elsewhere (another host, `casfs put`) stays unseen that long after a failed lookup,
# within the cache timeout a mount promises for outside changes anyway.
ABSENT_FOR_S = 1.0


class Attributes:
    def __init__(self, *, readonly: bool, cache_timeout: float) -> None:
        self.readonly = readonly
        self.cache_timeout = cache_timeout
        self.uid, self.gid = os.getuid(), os.getgid()
        # inode -> version_key of the document the kernel last got attributes of
        self.shown: dict[int, int] = {}

    def _base(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = mode
        attr.st_uid, attr.st_gid = self.uid, self.gid
        # The I/O size tools pick (cat, cp, Python's buffers): a MiB, one FUSE request
        # (libfuse's largest), where 128 KiB made eight. A cold S3 read with direct
        # I/O is as fast as its requests are large (README, "Blobs in S3").
        attr.st_blksize = 1 << 20
        attr.entry_timeout = attr.attr_timeout = self.cache_timeout
        return attr

    def absent(self) -> pyfuse3.EntryAttributes:
        """A lookup's "no such name" that the kernel keeps (a negative entry; pyfuse3
        replies so to an inode number of 0), for ABSENT_FOR_S at most."""
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = 0
        attr.entry_timeout = min(ABSENT_FOR_S, self.cache_timeout)
        attr.attr_timeout = 0
        return attr

    def directory(self, ino: int, mtime_ns: int) -> pyfuse3.EntryAttributes:
        attr = self._base(ino, stat.S_IFDIR | (0o555 if self.readonly else 0o755))
        attr.st_nlink = 2
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime_ns
        return attr

    def file(self, ino: int, size: int, mtime_ns: int, ctime: float,
             nlink: int = 1, read_only: bool = False) -> pyfuse3.EntryAttributes:
        mode = 0o444 if self.readonly or read_only else 0o644
        attr = self._base(ino, stat.S_IFREG | mode)
        attr.st_nlink = nlink
        attr.st_size = size
        attr.st_blocks = (size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = mtime_ns
        attr.st_ctime_ns = int(ctime * 1e9)
        return attr

    def document(self, doc: Document, nlink: int = 1) -> pyfuse3.EntryAttributes:
        self.shown[doc.ino] = version_key(doc)
        return self.file(doc.ino, doc.bytes, doc.mtime_ns, doc.updated_at, nlink)

    def open_file(self, file: OpenFile) -> pyfuse3.EntryAttributes:
        nlink = 0 if file.unlinked else 1
        if not file.dirty and file.document is not None:
            attr = self.document(file.document, nlink)
            attr.st_ino = file.ino  # the same inode, also for a version renamed elsewhere
            attr.st_mtime_ns = attr.st_atime_ns = file.mtime_ns
            return attr
        return self.file(file.ino, file.size, file.mtime_ns, time.time(), nlink)


def access_allowed(st_mode: int, asked: int, uid: int) -> bool:
    """Whether access(2) for `asked` (R_OK, W_OK, X_OK bits) succeeds on a file of
    `st_mode` for `uid`, who is root or the mounting user (no one else gets in
    without allow_other): the owner's bits decide; root reads and writes anything,
    searches any directory and runs what has an x bit."""
    bits = stat.S_IMODE(st_mode)
    if uid == 0:
        return not asked & os.X_OK or stat.S_ISDIR(st_mode) or bool(bits & 0o111)
    return asked & 0o7 & ~(bits >> 6) == 0


def version_key(doc: Document) -> int:
    """A short key of a document's bytes (64 bits of the hash: enough to tell versions
    of one file apart, and a small int to keep per inode)."""
    return int(doc.sha256[:16], 16)
