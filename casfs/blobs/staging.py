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
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
BLOB_MODE = 0o444
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
    file is re-hashed when it is finished. Not thread-safe: one writer at a time.
    """

    def __init__(self, path: Path | None, fd: int) -> None:
        self.path = path  # None for an unnamed O_TMPFILE file: nothing to clean up
        self.fd = fd
        self.size = 0
        self._hasher = hashlib.sha256()
        self._hashed = 0
        self._known: str | None = None  # a digest computed elsewhere (another process)

    @classmethod
    def placed_elsewhere(cls, path: Path, size: int, sha256: str) -> StagingFile:
        """A named staging file that another process wrote, hashed and placed: kept
        only so that its blob can be restored until the record is registered."""
        staging = cls(path, -1)
        staging.size = size
        staging._known = sha256
        return staging

    def write(self, data: bytes, offset: int) -> int:
        written = os.pwrite(self.fd, data, offset)
        if offset == self._hashed:
            self._hasher.update(data[:written])
            self._hashed += written
        elif offset < self._hashed:
            self._restart_hash()
        self.size = max(self.size, offset + written)
        return written

    def read(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        if size < self._hashed:
            self._restart_hash()
        self.size = size

    def copy_from(self, fd: int) -> None:
        """Fill an empty staging file from `fd` (copy-on-write of an existing blob)."""
        offset = 0
        while chunk := os.pread(fd, CHUNK, offset):
            self.write(chunk, offset)
            offset += len(chunk)

    def finish(self, *, fsync: bool = True) -> str:
        """Hash what is left, fsync and make the file read-only; return the SHA-256.

        `fsync=False` is for batches whose caller syncs the whole filesystem once
        before anything is linked into place (`LocalBlobStore.place_batch`).
        """
        digest = self.digest()
        if fsync:
            os.fsync(self.fd)
        os.fchmod(self.fd, BLOB_MODE)
        return digest

    def digest(self) -> str:
        """The SHA-256 of the file as it is now, hashing only what is not hashed yet."""
        if self._known is not None:
            return self._known
        while self._hashed < self.size:
            chunk = os.pread(self.fd, min(CHUNK, self.size - self._hashed), self._hashed)
            if not chunk:
                raise OSError(errno.EIO, f"staging file {self.path} is shorter than written")
            self._hasher.update(chunk)
            self._hashed += len(chunk)
        return self._hasher.hexdigest()

    def discard(self) -> None:
        """Close and remove the staging file; safe to call more than once."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.path is not None:
            self.path.unlink(missing_ok=True)

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
