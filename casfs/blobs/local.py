"""Blobs as files in a directory: `cas/sha256/ab/cdef…`, on a local or shared disk.

Law 1 lives here: a file under `cas/` always holds exactly the bytes whose SHA-256
is its name. Bytes are written to `tmp/` (same filesystem), hashed while they
stream in, synced to disk (an fsync, or one syncfs for a batch), made read-only
and only then linked into place; a blob is never opened for writing again. The one
exception is a durable mount's round (`place_batch(link_first=True)`), which links
first and syncs bytes and names together: its crash marker has whatever a crash of
the machine left between the two checked before the store is used again
(casfs.link_first).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from casfs.blobs import BlobStore, Hashed
from casfs.blobs.arrival import Arrival
from casfs.blobs.cache import ReadCache
from casfs.blobs.staging import Stager, StagingFile, is_sha256_hex

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                                           use_errno=True)
except OSError:
    _libc = None

class LocalBlobStore:
    """Blobs as read-only files under `cas/sha256/ab/cdef…` on a local filesystem."""

    local = True
    cache: ReadCache | None = None  # its blobs are read where they are

    def __init__(self, cas_dir: Path, tmp_dir: Path, *, quarantine_dir: Path | None = None,
                 unnamed_staging: bool = True) -> None:
        self.cas_dir = cas_dir
        self.tmp_dir = tmp_dir  # on the same filesystem as cas_dir: a link, not a copy
        self.quarantine_dir = quarantine_dir or cas_dir.parent / "quarantine"
        # Plain strings: these paths are built for every file, and pathlib is slow.
        self._root = os.path.join(os.path.abspath(cas_dir), "sha256")
        self._tmp = str(tmp_dir)
        self._fanout_ready: set[str] = set()
        # Unnamed staging needs linkat through /proc to give the file its name.
        self._stager = Stager(tmp_dir, unnamed=unnamed_staging and _libc is not None)

    def _blob_file(self, sha256: str) -> str:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return f"{self._root}/{sha256[:2]}/{sha256[2:]}"

    def path(self, sha256: str) -> Path:
        return Path(self._blob_file(sha256))

    def uri(self, sha256: str) -> str:
        return "file://" + quote(self._blob_file(sha256))

    def stage(self) -> StagingFile:
        return self._stager.stage()

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
            path = self._stager.name()
            os.link(source, path)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK):
                return None
            raise
        staging = StagingFile(Path(path), os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        staging.size = os.fstat(staging.fd).st_size
        return staging

    def place(self, staging: StagingFile, *, durable: bool = True) -> tuple[str, int, bool]:
        """Finish `staging` and link it into place. Returns (sha256, size, is_new).

        The staging file stays open: the caller discards it once the record is
        committed, and until then can `restore` the blob if gc removed it. Without
        `durable` nothing is synced (a bulk load's close; `sync` follows): law 1
        then holds for this blob only once `sync` returned, and a crash before that
        may leave it short or empty, which a bulk load's recovery finds
        (`placed_since`). A dedup hit that must be durable syncs the blob it found,
        which such a close may have placed, and not its own bytes, which no name
        will hold (`restore` syncs them if it ever links them).
        """
        sha256 = staging.finish(fsync=False)
        if not durable:
            return sha256, staging.size, self._link(staging, sha256)
        if self._sync_existing(sha256):  # a dedup hit
            return sha256, staging.size, False
        staging.sync()
        is_new = self._link(staging, sha256)
        if is_new:
            _fsync(self.path(sha256).parent)
        else:
            # Another writer placed it meanwhile. Removed since (gc): the registration
            # finds it gone and restores it from the staging file (law 2).
            self._sync_existing(sha256)
        return sha256, staging.size, is_new

    def _sync_existing(self, sha256: str) -> bool:
        """Make the blob `sha256` durable, name included, if it is in place; False
        when it is not (or was removed meanwhile)."""
        try:
            _fsync(self._blob_file(sha256))
        except FileNotFoundError:
            return False
        _fsync(self.path(sha256).parent)
        return True

    def sync(self) -> None:
        """Make every blob placed so far durable, names included (one syncfs)."""
        _syncfs(self.cas_dir)

    def placed_since(self, moment: float) -> Iterator[str]:
        """Blobs linked into place at or after `moment` (by their ctime, which a link
        sets), in no particular order: what a bulk load that crashed may not have
        synced. Fan-out directories not changed since then are skipped unread."""
        try:
            fanouts = list(os.scandir(self._root))
        except FileNotFoundError:
            return
        for fanout in fanouts:
            if not fanout.is_dir(follow_symlinks=False) or \
                    fanout.stat(follow_symlinks=False).st_mtime < moment:
                continue
            for entry in os.scandir(fanout.path):
                name = fanout.name + entry.name
                if is_sha256_hex(name) and entry.stat(follow_symlinks=False).st_ctime >= moment:
                    yield name

    def place_batch(self, stagings: list[StagingFile], *, durable: bool = True,
                    patient: bool = True, link_first: bool = False,
                    sync_entries: bool = True) -> list[tuple[str, int, bool]]:
        """`place` for many files: from SYNCFS_FROM files on, with two filesystem syncs
        instead of two fsyncs per file. A syncfs writes back every dirty file of the
        filesystem, not only ours: unless `patient` (an import, which wants the
        throughput), it is used only while little else waits (`little_else_to_write`),
        so that a close does not wait for other programs' writes.

        Law 1 holds either way: every staged byte is on disk before its name is. With
        sync_entries=False the new names are not synced yet: the caller calls `sync`
        before registering them (once for many batches). With `link_first`, see
        `_link_then_sync`.
        """
        if not durable:
            return [self.place(s, durable=False) for s in stagings]
        if link_first:
            return self._link_then_sync(stagings, patient)
        if len(stagings) < SYNCFS_FROM or not (patient or little_else_to_write(
                sum(s.size for s in stagings), pending_writeback())):
            for staging in stagings:  # a write that failed fails the batch before any
                staging.digest()      # blob of it is placed, as below
            return [self.place(s) for s in stagings]
        digests = [s.finish(fsync=False) for s in stagings]
        _syncfs(self.tmp_dir)  # every staged byte is durable before any link
        for staging in stagings:
            staging.on_disk = True
        results = [(sha, s.size, self._link(s, sha)) for s, sha in zip(stagings, digests,
                                                                        strict=True)]
        if sync_entries:  # dedup hits too: another close may have linked one unsynced
            self.sync()
        return results

    def _link_then_sync(self, stagings: list[StagingFile], patient: bool
                        ) -> list[tuple[str, int, bool]]:
        """`place_batch` for a caller whose crash marker covers a name on the disk
        before its bytes (casfs.link_first): every blob linked, then one syncfs for
        bytes and names together, whatever the batch's size (for one file too: 175
        against 240 µs here, `contrib/bench/place_cost.py --round 1`); or, while
        others' writes wait (unless `patient`), an fsync of each blob and of each
        directory it went into. A dedup hit's blob is synced too: a bulk load may
        have placed it unsynced."""
        digests = [s.finish(fsync=False) for s in stagings]  # a bad write: nothing linked
        results = [(sha256, s.size, self._link(s, sha256))
                   for s, sha256 in zip(stagings, digests, strict=True)]
        if patient or little_else_to_write(sum(s.size for s in stagings),
                                           pending_writeback()):
            self.sync()
            for staging in stagings:
                staging.on_disk = True
            return results
        for sha256 in dict.fromkeys(digests):
            # Removed meanwhile (gc): its registration restores it (law 2).
            with contextlib.suppress(FileNotFoundError):
                _fsync(self._blob_file(sha256))
        for directory in dict.fromkeys(os.path.dirname(self._blob_file(sha256))
                                       for sha256 in digests):
            _fsync(directory)
        for staging, (_, _, is_new) in zip(stagings, results, strict=True):
            staging.on_disk = staging.on_disk or is_new
        return results

    def restore(self, staging: StagingFile, sha256: str) -> None:
        """Put a placed blob back after it was removed meanwhile (gc, quarantine)."""
        staging.sync()  # a dedup hit's bytes were not synced when it was placed
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
            _fsync(self.path(sha256).parent)

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
        staging.linked = True
        return True

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self._blob_file(sha256))

    def open_blob(self, sha256: str) -> int:
        return os.open(self._blob_file(sha256), os.O_RDONLY | os.O_CLOEXEC)

    def open_blob_early(self, sha256: str, size: int) -> tuple[int, Arrival | None]:
        return self.open_blob(sha256), None  # every byte is here

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def hash_blob(self, sha256: str) -> Hashed:
        try:
            with open(self._blob_file(sha256), "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            return Hashed(sha256, None, 0, None)
        return Hashed(sha256, digest, st.st_size, f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}")

    def quarantine(self, sha256: str, seen: Hashed) -> str | None:
        path = self.path(sha256)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}" != seen.version:
            return None  # replaced since it was hashed
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / f"{sha256}.{int(time.time())}"
        os.rename(path, target)
        return str(target)


_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def _implements_the_protocol(store: LocalBlobStore) -> BlobStore:
    return store  # mypy checks here that LocalBlobStore is a BlobStore


def _link_fd(fd: int, destination: str) -> None:
    """Give an O_TMPFILE file a name (linkat through /proc/self/fd: no privilege needed)."""
    assert _libc is not None
    source = f"/proc/self/fd/{fd}".encode()
    if _libc.linkat(_AT_FDCWD, source, _AT_FDCWD, destination.encode(),
                    _AT_SYMLINK_FOLLOW) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), destination)


# From how many files a batch is placed with two syncfs instead of two fsyncs per
# file, and how much data of other writers may be waiting for the disk then (for an
# impatient batch: a round of closes): a syncfs writes back every dirty file of the
# filesystem, not only ours. Measured with
# contrib/bench/place_cost.py (README, "Small files"): two fsyncs cost 266 µs a file
# placed one after another, one syncfs about 290 µs, so two syncfs win from 3 files.
SYNCFS_FROM = 3
OTHERS_PENDING_AT_MOST = 64 << 20


def little_else_to_write(own_bytes: int, pending: int | None) -> bool:
    """Whether a syncfs would wait for little but our own `own_bytes`: the kernel's
    `pending` writeback (None: unknown), less ours, which may be among it."""
    return pending is not None and pending - own_bytes <= OTHERS_PENDING_AT_MOST


def pending_writeback() -> int | None:
    """Bytes the kernel has yet to write back, system-wide (Dirty + Writeback); None
    where it does not say (no /proc/meminfo)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith((b"Dirty:", b"Writeback:")):
            total += int(line.split()[1]) * 1024
    return total


def _syncfs(path: Path) -> None:
    """Flush the filesystem that holds `path` (Linux syncfs; sync where there is no
    syncfs). An error writing it back is raised: nothing may count as durable then."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc is None:
            os.sync()
        elif _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            if code != errno.ENOSYS:
                raise OSError(code, f"syncfs: {os.strerror(code)}", str(path))
            os.sync()
    finally:
        os.close(fd)


def _fsync(path: str | Path) -> None:
    """fsync a file or a directory by its path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
