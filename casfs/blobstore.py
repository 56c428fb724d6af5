"""The content-addressed blob store: bytes stored once, named by their SHA-256.

Law 1 lives here: a file under `cas/` always holds exactly the bytes whose SHA-256
is its name. Bytes are written to `tmp/` (same filesystem), hashed while they
stream in, fsynced, made read-only and only then linked into place; a blob is
never opened for writing again. `BlobStore` is the interface the rest of casfs
uses, so that an object-store backend can stand in for `LocalBlobStore` later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import secrets
from pathlib import Path
from typing import Protocol

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                                           use_errno=True)
except OSError:
    _libc = None

CHUNK = 1 << 20
BLOB_MODE = 0o444
SHA256_HEX_LEN = 64


def is_sha256_hex(value: str) -> bool:
    return len(value) == SHA256_HEX_LEN and all(c in "0123456789abcdef" for c in value)


class StagingFile:
    """A file being written in `tmp/`, hashed as it arrives.

    The hash covers the prefix [0, hashed) of the file. A write that starts exactly
    at `hashed` extends it (the common case: sequential copies hash in one pass);
    a write or truncate that changes bytes inside the prefix throws it away and the
    file is re-hashed when it is finished. Not thread-safe: one writer at a time.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = 0
        self._hasher = hashlib.sha256()
        self._hashed = 0

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
        before anything is linked into place (`LocalBlobStore.commit_batch`).
        """
        digest = self.digest()
        if fsync:
            os.fsync(self.fd)
        os.fchmod(self.fd, BLOB_MODE)
        return digest

    def digest(self) -> str:
        """The SHA-256 of the file as it is now, hashing only what is not hashed yet."""
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
        self.path.unlink(missing_ok=True)

    def _restart_hash(self) -> None:
        self._hasher = hashlib.sha256()
        self._hashed = 0


class BlobStore(Protocol):
    """What casfs needs from a place that keeps blobs."""

    def stage(self) -> StagingFile: ...

    def commit(self, staging: StagingFile) -> tuple[str, int, bool]:
        """Finish `staging` and put it in place. Returns (sha256, size, is_new)."""
        ...

    def has(self, sha256: str) -> bool: ...

    def open_blob(self, sha256: str) -> int:
        """A read-only file descriptor on the blob's bytes."""
        ...

    def uri(self, sha256: str) -> str: ...


class LocalBlobStore:
    """Blobs as read-only files under `cas/sha256/ab/cdef…` on a local filesystem."""

    def __init__(self, cas_dir: Path, tmp_dir: Path) -> None:
        self.cas_dir = cas_dir
        self.tmp_dir = tmp_dir

    def path(self, sha256: str) -> Path:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.cas_dir / "sha256" / sha256[:2] / sha256[2:]

    def uri(self, sha256: str) -> str:
        return self.path(sha256).as_uri()

    def stage(self) -> StagingFile:
        path = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.part"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return StagingFile(path, fd)

    def adopt(self, source: Path) -> StagingFile | None:
        """Stage a user's file without copying it (what an import with --move does).

        The file gets a second link in `tmp/`; the caller removes the original once
        the record is committed, so a crash in between loses nothing. None when the
        file is on another filesystem, or has other hard links (an edit through one
        of them would change the blob's bytes): copy it instead.
        """
        try:
            if os.stat(source).st_nlink != 1:
                return None
            path = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.part"
            os.link(source, path)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK):
                return None
            raise
        staging = StagingFile(path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        staging.size = os.fstat(staging.fd).st_size
        return staging

    def commit(self, staging: StagingFile) -> tuple[str, int, bool]:
        try:
            sha256 = staging.finish()
            is_new = self._link(staging, sha256)
            if is_new:
                _fsync_dir(self.path(sha256).parent)
            return sha256, staging.size, is_new
        finally:
            staging.discard()

    def commit_batch(self, stagings: list[StagingFile]) -> list[tuple[str, int, bool]]:
        """`commit` for many files with two filesystem syncs instead of 2 per file."""
        try:
            digests = [s.finish(fsync=False) for s in stagings]
            if stagings:
                _syncfs(self.tmp_dir)  # every staged byte is durable before any link
            results = [(sha, s.size, self._link(s, sha)) for s, sha in zip(stagings, digests,
                                                                            strict=True)]
            if any(is_new for _, _, is_new in results):
                _syncfs(self.cas_dir)  # and so are the new directory entries
            return results
        finally:
            for staging in stagings:
                staging.discard()

    def _link(self, staging: StagingFile, sha256: str) -> bool:
        """Put a finished staging file in place; False when the blob already exists."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # link() never replaces: of two writers of the same bytes, one wins and
            # the other sees EEXIST, which is a dedup hit.
            os.link(staging.path, final)
        except FileExistsError:
            return False
        return True

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open_blob(self, sha256: str) -> int:
        return os.open(self.path(sha256), os.O_RDONLY | os.O_CLOEXEC)


def _syncfs(path: Path) -> None:
    """Flush the filesystem that holds `path` (Linux syncfs; sync elsewhere)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
