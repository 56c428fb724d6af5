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
import re
import secrets
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                                           use_errno=True)
except OSError:
    _libc = None

CHUNK = 1 << 20
BLOB_MODE = 0o444


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: str) -> bool:
    return _SHA256_HEX.fullmatch(value) is not None


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


class BlobStore(Protocol):
    """What casfs needs from a place that keeps blobs."""

    def stage(self) -> StagingFile: ...

    def place(self, staging: StagingFile) -> tuple[str, int, bool]:
        """Finish `staging` and link it into place. Returns (sha256, size, is_new)."""
        ...

    def place_batch(self, stagings: list[StagingFile]) -> list[tuple[str, int, bool]]: ...

    def restore(self, staging: StagingFile, sha256: str) -> None: ...

    def has(self, sha256: str) -> bool: ...

    def open_blob(self, sha256: str) -> int:
        """A read-only file descriptor on the blob's bytes."""
        ...

    def uri(self, sha256: str) -> str: ...


class LocalBlobStore:
    """Blobs as read-only files under `cas/sha256/ab/cdef…` on a local filesystem."""

    def __init__(self, cas_dir: Path, tmp_dir: Path, *, quarantine_dir: Path | None = None,
                 unnamed_staging: bool = True) -> None:
        self.cas_dir = cas_dir
        self.tmp_dir = tmp_dir  # on the same filesystem as cas_dir: a link, not a copy
        self.quarantine_dir = quarantine_dir or cas_dir.parent / "quarantine"
        # Plain strings: these paths are built for every file, and pathlib is slow.
        self._root = os.path.join(os.path.abspath(cas_dir), "sha256")
        self._tmp = str(tmp_dir)
        self._fanout_ready: set[str] = set()
        self._unnamed_staging = unnamed_staging and hasattr(os, "O_TMPFILE") and \
            _libc is not None

    def _blob_file(self, sha256: str) -> str:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return f"{self._root}/{sha256[:2]}/{sha256[2:]}"

    def path(self, sha256: str) -> Path:
        return Path(self._blob_file(sha256))

    def uri(self, sha256: str) -> str:
        return "file://" + quote(self._blob_file(sha256))

    def _staging_name(self) -> str:
        return f"{self._tmp}/{os.getpid()}-{secrets.token_hex(8)}.part"

    def stage(self) -> StagingFile:
        """A new staging file: unnamed (O_TMPFILE) where the filesystem allows, so a
        crash leaves nothing behind and no name is created or removed per file."""
        if self._unnamed_staging:
            try:
                fd = os.open(self._tmp, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
                return StagingFile(None, fd)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._unnamed_staging = False
        path = self._staging_name()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return StagingFile(Path(path), fd)

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
            path = self._staging_name()
            os.link(source, path)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK):
                return None
            raise
        staging = StagingFile(Path(path), os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        staging.size = os.fstat(staging.fd).st_size
        return staging

    def place(self, staging: StagingFile) -> tuple[str, int, bool]:
        """Finish `staging` and link it into place. Returns (sha256, size, is_new).

        The staging file stays open: the caller discards it once the record is
        committed, and until then can `restore` the blob if gc removed it.
        """
        sha256 = staging.finish()
        is_new = self._link(staging, sha256)
        if is_new:
            _fsync_dir(self.path(sha256).parent)
        return sha256, staging.size, is_new

    def place_batch(self, stagings: list[StagingFile], *, sync_entries: bool = True
                    ) -> list[tuple[str, int, bool]]:
        """`place` for many files, with two filesystem syncs instead of two per file.

        With sync_entries=False the new names are not synced yet: the caller calls
        `sync_entries` before registering them (once for many batches).
        """
        digests = [s.finish(fsync=False) for s in stagings]
        if stagings:
            _syncfs(self.tmp_dir)  # every staged byte is durable before any link
        results = [(sha, s.size, self._link(s, sha)) for s, sha in zip(stagings, digests,
                                                                        strict=True)]
        if sync_entries and any(is_new for _, _, is_new in results):
            self.sync_entries()
        return results

    def sync_entries(self) -> None:
        """Make the names of newly placed blobs durable."""
        _syncfs(self.cas_dir)

    def restore(self, staging: StagingFile, sha256: str) -> None:
        """Put a placed blob back after it was removed meanwhile (gc, quarantine)."""
        try:
            is_new = self._link(staging, sha256)
        except FileNotFoundError:
            # Linux links an unnamed file only until its first name is gone: copy the
            # bytes, still readable through the open descriptor, into a fresh one.
            copy = self.stage()
            try:
                copy.copy_from(staging.fd)
                if copy.finish() != sha256:
                    raise OSError(errno.EIO, f"staged bytes of {sha256} changed") from None
                is_new = self._link(copy, sha256)
            finally:
                copy.discard()
        if is_new:
            _fsync_dir(self.path(sha256).parent)

    def _link(self, staging: StagingFile, sha256: str) -> bool:
        """Put a finished staging file in place; False when the blob already exists."""
        final = self._blob_file(sha256)
        if sha256[:2] not in self._fanout_ready:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self._fanout_ready.add(sha256[:2])
        try:
            # link() never replaces: of two writers of the same bytes, one wins and
            # the other sees EEXIST, which is a dedup hit.
            if staging.path is None:
                _link_fd(staging.fd, final)
            else:
                os.link(staging.path, final)
        except FileExistsError:
            return False
        return True

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self._blob_file(sha256))

    def open_blob(self, sha256: str) -> int:
        return os.open(self._blob_file(sha256), os.O_RDONLY | os.O_CLOEXEC)


_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def _link_fd(fd: int, destination: str) -> None:
    """Give an O_TMPFILE file a name (linkat through /proc/self/fd: no privilege needed)."""
    assert _libc is not None
    source = f"/proc/self/fd/{fd}".encode()
    if _libc.linkat(_AT_FDCWD, source, _AT_FDCWD, destination.encode(),
                    _AT_SYMLINK_FOLLOW) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), destination)


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
