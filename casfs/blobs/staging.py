"""Staging: a blob's bytes on their way in, hashed while they arrive.

Every blob store stages on a local filesystem first (law 1: nothing is placed
before it is complete, hashed and durable); the store then links (local) or
uploads (object storage) the finished file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK = 1 << 20
BLOB_MODE = 0o444
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Closing a staging file that no name holds (a dedup hit, a file uploaded to object
# storage, a failed write) frees its blocks, and on a filesystem mounted with
# `discard` the kernel waits there for the device to trim them: 94-96 us a close,
# measured in a mount's event loop with 8 writers of identical files (0.9-3 us for
# a file that was linked). A thread of its own closes those instead; the
# descriptor's number stays taken until then, so nothing else can be opened under
# it meanwhile. A linked file, or one whose bytes were never synced (their blocks
# not allocated yet: a bulk load), is closed at once: handing every close over cost
# a one-writer bulk load 8-12% of its files per second.
_closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casfs-staging-close")


def is_sha256_hex(value: str) -> bool:
    return _SHA256_HEX.fullmatch(value) is not None


def read_chunks(fd: int, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The first `size` bytes of `fd`, `chunk` bytes at a time (fewer if it is shorter)."""
    offset = 0
    while offset < size:
        data = os.pread(fd, min(chunk, size - offset), offset)
        if not data:
            return
        yield data
        offset += len(data)


class StagingFile:
    """A file being written in `tmp/`, hashed as it arrives.

    The hash covers the prefix [0, hashed) of the file. A write that starts exactly
    at `hashed` extends it (the common case: sequential copies hash in one pass);
    a write or truncate that changes bytes inside the prefix throws it away and the
    file is re-hashed when it is finished.

    Writes can also be queued (`queue`): kept in memory, in order, and written by
    the next method that touches the file, or by `apply_queued` (the mount drains a
    file's queue in a worker thread while its writer sends the next bytes). Queuing
    makes no system call, so the mount's event loop can take a write without a trip
    to a worker thread; `size` counts queued bytes at once. A queued write that
    fails is raised by every later call, so the close reports it (law 6: nothing is
    registered). Thread safety: every method that touches the file holds one lock,
    so a drain in one thread and a read in another take turns; `queue` takes only
    the queue's own lock and never waits for a drain.
    """

    def __init__(self, path: Path | None, fd: int) -> None:
        self.path = path  # None for an unnamed O_TMPFILE file: nothing to clean up
        self.fd = fd
        self.size = 0  # queued writes included
        self.queued_bytes = 0
        self._hasher = hashlib.sha256()
        self._hashed = 0
        self._known: str | None = None  # a digest computed elsewhere (another process)
        self._lock = threading.Lock()  # the file, the hash
        self._queue_lock = threading.Lock()  # the queue and the flags below
        self._queued: list[tuple[bytes, int]] = []
        self._failed: OSError | None = None  # a queued write that failed
        self._applying = False
        self._discarded = False
        self.on_disk = False  # synced: its blocks are allocated (see _close)
        # Given a name once (it became a blob). Never emptied after that, even once
        # the name is gone (gc): a pin may still read it, and Linux links an unnamed
        # file again only until its first name is gone.
        self.linked = False

    @classmethod
    def placed_elsewhere(cls, path: Path, size: int, sha256: str) -> StagingFile:
        """A named staging file that another process wrote, hashed and placed: kept
        only so that its blob can be restored until the record is registered."""
        staging = cls(path, -1)
        staging.size = size
        staging._known = sha256
        return staging

    def write(self, data: bytes, offset: int) -> int:
        with self._lock:
            self._apply_queued()
            return self._write(data, offset)

    def queue(self, data: bytes, offset: int) -> None:
        """Take a write to make later; raises the error of an earlier one that failed."""
        with self._queue_lock:
            if self._failed is not None:
                raise self._failed
            self._queued.append((data, offset))
            self.queued_bytes += len(data)
            self.size = max(self.size, offset + len(data))

    def apply_queued(self) -> None:
        """Write what is queued (in a worker thread: this blocks)."""
        with self._lock:
            self._apply_queued()

    def read(self, length: int, offset: int) -> bytes:
        with self._lock:
            self._apply_queued()
            return os.pread(self.fd, length, offset)

    def truncate(self, size: int) -> None:
        with self._lock:
            self._apply_queued()
            os.ftruncate(self.fd, size)
            if size < self._hashed:
                self._restart_hash()
            with self._queue_lock:
                self.size = size

    def copy_from(self, fd: int) -> None:
        """Fill an empty staging file from `fd` (copy-on-write of an existing blob)."""
        with self._lock:
            offset = 0
            while chunk := os.pread(fd, CHUNK, offset):
                self._write(chunk, offset)
                offset += len(chunk)

    def finish(self, *, fsync: bool = True) -> str:
        """Hash what is left, fsync and make the file read-only; return the SHA-256.

        `fsync=False` is for batches whose caller syncs the whole filesystem once
        before anything is linked into place (`LocalBlobStore.place_batch`).
        """
        with self._lock:
            digest = self._digest()
            if fsync:
                os.fsync(self.fd)
                self.on_disk = True
            os.fchmod(self.fd, BLOB_MODE)
            return digest

    def sync(self) -> None:
        """fsync the file (after `finish(fsync=False)`): its bytes are on disk. A
        staging file another process wrote is synced by its path."""
        with self._lock:
            if self.on_disk:
                return
            if self.fd >= 0:
                os.fsync(self.fd)
            elif self.path is not None:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.on_disk = True

    def digest(self) -> str:
        """The SHA-256 of the file as it is now, hashing only what is not hashed yet."""
        with self._lock:
            return self._digest()

    def reusable(self) -> bool:
        """An unnamed file that was never given a name (its bytes were a dedup hit,
        or were uploaded), with nothing queued or failed: `reuse` can empty it for
        another file. A system call, but one that never waits for the disk (fstat)."""
        with self._queue_lock:
            if self.path is not None or self.fd < 0 or self._discarded or self._queued \
                    or self._applying or self._failed is not None or self.linked:
                return False
        return os.fstat(self.fd).st_nlink == 0

    def reuse(self) -> StagingFile:
        """This file's descriptor, emptied, as a new staging file (this one is closed
        for good): no inode freed here and made anew there. Only for a `reusable`
        file; blocks (the truncate frees its blocks, and may wait for a trim)."""
        with self._lock, self._queue_lock:
            fd, self.fd = self.fd, -1
            self._discarded = True
        try:
            os.ftruncate(fd, 0)
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        return StagingFile(None, fd)

    def discard(self) -> None:
        """Close and remove the staging file; safe to call more than once, and from
        the event loop while a drain is writing (that thread closes it when done)."""
        with self._queue_lock:
            self._queued.clear()
            self.queued_bytes = 0
            self._discarded = True
            close_now = not self._applying
        if close_now:
            self._close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    # -- with self._lock held ------------------------------------------------------
    def _apply_queued(self) -> None:
        with self._queue_lock:
            if self._failed is not None:
                raise self._failed
            batch, self._queued, self.queued_bytes = self._queued, [], 0
            self._applying = bool(batch)
        if not batch:
            return
        try:
            for data, offset in batch:
                self._write(data, offset)
        except OSError as e:
            with self._queue_lock:
                self._failed = e
            raise
        finally:
            with self._queue_lock:
                self._applying = False
                close_now = self._discarded
            if close_now:
                self._close()

    def _write(self, data: bytes, offset: int) -> int:
        written = 0
        while written < len(data):
            n = os.pwrite(self.fd, data[written:], offset + written)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += n
        if offset == self._hashed:
            self._hasher.update(data)
            self._hashed += written
        elif offset < self._hashed:
            self._restart_hash()
        with self._queue_lock:  # `queue` may grow it meanwhile, on the event loop
            self.size = max(self.size, offset + written)
        return written

    def _digest(self) -> str:
        if self._known is not None:
            return self._known
        self._apply_queued()
        while self._hashed < self.size:
            chunk = os.pread(self.fd, min(CHUNK, self.size - self._hashed), self._hashed)
            if not chunk:
                raise OSError(errno.EIO, f"staging file {self.path} is shorter than written")
            self._hasher.update(chunk)
            self._hashed += len(chunk)
        return self._hasher.hexdigest()

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            if self.on_disk and os.fstat(fd).st_nlink == 0:
                _closer.submit(os.close, fd)
            else:
                os.close(fd)

    def _restart_hash(self) -> None:
        self._hasher = hashlib.sha256()
        self._hashed = 0


class Stager:
    """Makes staging files in one directory: unnamed (O_TMPFILE) where the filesystem
    allows, so a crash leaves nothing behind; else named `<pid>-<random>.part`, which
    fsck and a starting mount remove once their process is gone."""

    def __init__(self, directory: Path, *, unnamed: bool = True) -> None:
        self.directory = directory
        self._unnamed = unnamed and hasattr(os, "O_TMPFILE")

    def name(self) -> str:
        return f"{self.directory}/{os.getpid()}-{secrets.token_hex(8)}.part"

    def stage(self) -> StagingFile:
        if self._unnamed:
            try:
                fd = os.open(self.directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
                return StagingFile(None, fd)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._unnamed = False
        path = self.name()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return StagingFile(Path(path), fd)
