"""A host's local copies of blobs kept in object storage: bounded, least recently used.

A blob is fetched into a file of the cache once and read from it afterwards at
page-cache speed (the mount hands the file's descriptor to its reads). Every fill
is hashed as it arrives and refused on a mismatch. A cached file changed since it
was last found right (its stamp differs: cache_stamps.py) is hashed again at its
next open, so a file damaged on disk is found and fetched anew; an unchanged one
is not, in this process or the next. Concurrent readers of one blob wait for one
fill. The cache survives restarts (its files are the index) and is trimmed below
`size` bytes, oldest use first (a file's modification time is its last use, to
within TOUCH_EVERY); a file that is open stays readable after it is evicted.

A large blob (EARLY_FROM bytes or more) is filled in the background instead, and
its readers get a descriptor on the file as it grows together with its `Arrival`:
a read of the first bytes waits for those bytes, not for the whole object (and a
large cached file that must be hashed again is hashed beside its readers,
likewise). The fill is still hashed to the end: if the bytes turn out wrong, the
file is never kept and every later read of it fails (the reads before it got bytes
no check had passed yet: the price of not waiting, paid only for large blobs).

    <cache>/ab/cdef…      a blob, read-only
    <cache>/.fill-…       a fill in progress (removed when it fails)
    <cache>/.stamps       the stamps of the files found right (cache_stamps.py)
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from casfs.blobs.arrival import Arrival
from casfs.blobs.cache_stamps import Stamps, stamp_of
from casfs.blobs.staging import BLOB_MODE, StagingFile, read_chunks

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

log = logging.getLogger("casfs.blobs")

FILL_LOCKS = 64
EARLY_FROM = 8 << 20  # blobs this large are read while they arrive
SLICE = 256 << 10  # hashed, then written, while it is still in the CPU's cache
# A background fill drops the pages of its file this far behind the bytes arriving
# (its readers take the latest bytes from memory, arrival.HELD), a step at a time: see
# `_drop_behind`.
DROP_BEHIND = 32 << 20
DROP_STEP = 8 << 20
# A cached file's modification time is moved to now at an open when it is older
# than this: eviction goes by it, and each move changes the file's stamp (one more
# line in .stamps), so it is not moved at every open.
TOUCH_EVERY = 60
# The blob's bytes, chunk by chunk; a chunk is never changed once handed over (a
# background fill keeps its latest ones for its readers, see `Arrival.held`).
Fetch = Callable[[], Iterable[bytes | memoryview]]


class CorruptBlob(OSError):
    """Bytes that arrived do not match the blob's name."""


class ReadCache:
    def __init__(self, directory: Path, size: int) -> None:
        self.directory = directory
        self.size = size
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Fills of one blob wait for each other; a fixed set of locks (by hash) keeps
        # that from growing with every blob ever read.
        self._fills = [threading.Lock() for _ in range(FILL_LOCKS)]
        self._stamps = Stamps(directory / ".stamps")  # cached files found right
        self._arriving: dict[str, tuple[Path, Arrival]] = {}  # background fills
        self._used = sum(p.stat().st_size for p in directory.glob("??/*"))

    def path(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / sha256[2:]

    def open(self, sha256: str, fetch: Fetch) -> int:
        """A descriptor on the cached blob, fetching it first when it is not here."""
        with self._lock:
            arriving = self._arriving.get(sha256)
        if arriving is not None:  # one download: wait for the background fill's end
            arriving[1].wait_for(arriving[1].size)
        with self._fill_lock(sha256):
            fd = self._open_checked(sha256)
            if fd is None:
                self._fill(sha256, fetch())
                fd = os.open(self.path(sha256), os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def open_early(self, sha256: str, size: int, fetch: Fetch) -> tuple[int, Arrival | None]:
        """A descriptor on the blob and, while its bytes are still arriving, their
        `Arrival` (read a range only after `wait_for` its end). Small blobs are
        fetched whole first, as by `open`."""
        if size < EARLY_FROM:
            return self.open(sha256, fetch), None
        with self._fill_lock(sha256):
            fd = self._open_cached(sha256)
            if fd is not None:
                st = self._touch(sha256, fd)
                if self._stamps.trusted(sha256, st):
                    return fd, None
                return fd, self._start_check(sha256, fd, size, st)
            with self._lock:  # the fill's end renames its file under this lock
                arriving = self._arriving.get(sha256)
                if arriving is None:
                    arriving = self._start_arrival(sha256, size, fetch)
                return os.open(arriving[0], os.O_RDONLY | os.O_CLOEXEC), arriving[1]

    def _start_check(self, sha256: str, fd: int, size: int, st: os.stat_result) -> Arrival:
        """Hash a cached file (changed since it was found right, or never found
        right by this host's processes) beside its readers, who need not wait for
        it: its bytes are all here; a read that reaches the end waits for the
        verdict. A damaged file fails its reads and is dropped, so the next open
        fetches it anew. `st`: the file before the hash."""
        arrival = Arrival(size)
        arrival.arrived = size
        check = os.dup(fd)

        def run() -> None:
            error: BaseException | None = None
            try:
                digest = hashlib.sha256()
                for chunk in read_chunks(check, size):
                    digest.update(chunk)
                if digest.hexdigest() == sha256:
                    self._found_right(sha256, check, st)
                else:
                    log.warning("cached blob %s was damaged on disk; dropped, the next "
                                "open fetches it again", sha256)
                    self.drop(sha256)
                    error = CorruptBlob(f"the cached copy of blob {sha256} was damaged")
            except BaseException as e:
                error = e
            finally:
                os.close(check)
                arrival._finish(error)

        threading.Thread(target=run, name=f"casfs-check-{sha256[:8]}", daemon=True).start()
        return arrival

    def _start_arrival(self, sha256: str, size: int, fetch: Fetch) -> tuple[Path, Arrival]:
        partial = self.directory / f".fill-{os.getpid()}-{threading.get_ident()}-{sha256}"
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        arrival = Arrival(size)
        self._arriving[sha256] = (partial, arrival)
        threading.Thread(target=self._arrive, args=(sha256, out, partial, arrival, fetch),
                         name=f"casfs-fill-{sha256[:8]}", daemon=True).start()
        return partial, arrival

    def _arrive(self, sha256: str, out: int, partial: Path, arrival: Arrival,
                fetch: Fetch) -> None:
        hashing = _HashBeside()
        error: BaseException | None = None
        try:
            dropped = 0
            for chunk in fetch():
                _hash_and_write(out, chunk, None)
                arrival._advance(len(chunk), chunk)
                hashing.add(chunk)
                dropped = _drop_behind(out, arrival.arrived, dropped)
            digest = hashing.hexdigest()
            if digest != sha256:
                raise CorruptBlob(f"the bytes fetched for blob {sha256} have hash "
                                  f"{digest}: refused")
            os.fchmod(out, BLOB_MODE)
            self.path(sha256).parent.mkdir(exist_ok=True)
            with self._lock:
                os.replace(partial, self.path(sha256))
                self._stamps.record(sha256, os.fstat(out))  # before anyone opens it
                self._used += arrival.arrived
                del self._arriving[sha256]
        except BaseException as e:
            error = e  # told to every reader that waits for it, who says so
            with self._lock:
                self._arriving.pop(sha256, None)
                partial.unlink(missing_ok=True)
        finally:
            hashing.stop()
            os.close(out)
            arrival._finish(error)
        if error is None:
            self._trim()

    def add(self, sha256: str, staging: StagingFile) -> None:
        """Keep a blob this host just wrote (its bytes are hashed already)."""
        with self._fill_lock(sha256):
            if self.path(sha256).exists():
                return
            self._fill(sha256, read_chunks(staging.fd, staging.size), known=True)

    def cached(self) -> list[tuple[str, int]]:
        """(sha256, size) of every blob cached now."""
        found = []
        for path in self.directory.glob("??/*"):
            try:
                found.append((path.parent.name + path.name, path.stat().st_size))
            except FileNotFoundError:  # evicted meanwhile
                continue
        return found

    def check(self, sha256: str) -> bool | None:
        """Hash the cached file again whatever its stamp says (`casfs verify --cache`:
        a change beneath the filesystem leaves the stamp as it was). True when it is
        right (stamped afresh); False when it was damaged and is dropped, so that the
        next open fetches it anew; None when it is not cached (evicted meanwhile)."""
        with self._fill_lock(sha256):
            fd = self._open_cached(sha256)
            if fd is None:
                return None
            try:
                st = os.fstat(fd)
                digest = hashlib.sha256()
                for chunk in read_chunks(fd, st.st_size):
                    digest.update(chunk)
                if digest.hexdigest() == sha256:
                    self._found_right(sha256, fd, st)
                    return True
            finally:
                os.close(fd)
            log.warning("cached blob %s was damaged on disk; dropped, the next open "
                        "fetches it again", sha256)
            try:
                if os.stat(self.path(sha256)).st_ino == st.st_ino:  # not fetched anew
                    self.drop(sha256)
            except FileNotFoundError:
                pass
            return False

    def drop(self, sha256: str) -> None:
        path = self.path(sha256)
        with self._lock:
            try:
                self._used -= path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
        self._stamps.forget(sha256)

    def _fill_lock(self, sha256: str) -> threading.Lock:
        return self._fills[int(sha256[:4], 16) % FILL_LOCKS]

    def _open_cached(self, sha256: str) -> int | None:
        try:
            return os.open(self.path(sha256), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _touch(self, sha256: str, fd: int) -> os.stat_result:
        """Mark an open of the cached file as its last use (see TOUCH_EVERY); its
        stamp follows when it was trusted. Returns the file's status after."""
        st = os.fstat(fd)
        if st.st_mtime_ns >= time.time_ns() - TOUCH_EVERY * 1_000_000_000:
            return st
        trusted = self._stamps.trusted(sha256, st)
        try:
            os.utime(fd)
        except PermissionError:  # another user's file: read it all the same
            return st
        touched = os.fstat(fd)
        if trusted:
            self._stamps.record(sha256, touched)
        return touched

    def _found_right(self, sha256: str, fd: int, before: os.stat_result) -> None:
        """A hash of the file just said yes: stamp it, unless it changed meanwhile
        (then the bytes hashed may not be the bytes it holds)."""
        after = os.fstat(fd)
        if stamp_of(after) == stamp_of(before):
            self._stamps.record(sha256, after)

    def _open_checked(self, sha256: str) -> int | None:
        """A descriptor on the cached file when it is here and right (hashed again
        when it changed since it was last found right), else None."""
        fd = self._open_cached(sha256)
        if fd is None:
            return None
        st = self._touch(sha256, fd)
        if self._stamps.trusted(sha256, st):
            return fd
        digest = hashlib.sha256()
        for chunk in read_chunks(fd, st.st_size):
            digest.update(chunk)
        if digest.hexdigest() == sha256:
            self._found_right(sha256, fd, st)
            return fd
        os.close(fd)
        log.warning("cached blob %s was damaged on disk; fetching it again", sha256)
        self.drop(sha256)
        return None

    def _fill(self, sha256: str, chunks: Iterable[bytes | memoryview], *,
              known: bool = False) -> None:
        target = self.path(sha256)
        target.parent.mkdir(exist_ok=True)
        partial = self.directory / f".fill-{os.getpid()}-{threading.get_ident()}-{sha256}"
        digest = hashlib.sha256()
        size = 0
        try:
            out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                for chunk in chunks:
                    _hash_and_write(out, chunk, None if known else digest)
                    size += len(chunk)
            finally:
                os.close(out)
            if not known and digest.hexdigest() != sha256:
                raise CorruptBlob(f"the bytes fetched for blob {sha256} have hash "
                                  f"{digest.hexdigest()}: refused")
            os.chmod(partial, BLOB_MODE)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._stamps.record(sha256, os.stat(target))
        with self._lock:
            self._used += size
        self._trim()

    def _trim(self) -> None:
        """Evict least recently used blobs until the cache is a tenth below its size, so
        that the scan this takes happens once in many fills, not on every one."""
        with self._lock:
            if self._used <= self.size:
                return
            target = self.size * 9 // 10
            entries = sorted(((p.stat().st_mtime, p) for p in self.directory.glob("??/*")),
                             key=lambda entry: entry[0])
            for _, path in entries:
                if self._used <= target:
                    break
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                self._used -= size
                self._stamps.forget(path.parent.name + path.name)


class _HashBeside:
    """SHA-256 of a background fill's chunks, in a thread of its own.

    The fill's thread receives, writes and hands each chunk to its readers; hashed
    in the same thread, the hash (about 0.6 s of CPU a GiB here) lengthened every
    step of the one thread a cold read waits on. The verdict still comes before the
    fill's end is told (`Arrival`), so nothing changes for the readers: only the
    hashing moves to the other core. At most QUEUED chunks wait for it."""

    QUEUED = 32

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._chunks: queue.Queue[bytes | memoryview | None] = queue.Queue(self.QUEUED)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="casfs-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def add(self, chunk: bytes | memoryview) -> None:
        self._chunks.put(chunk)

    def hexdigest(self) -> str:
        """The hash of every chunk added, once the thread has taken them all."""
        self.stop()
        return self._digest.hexdigest()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._chunks.put(None)
            self._thread.join()


def _drop_behind(fd: int, arrived: int, dropped: int) -> int:
    """Drop the page cache of a filling file DROP_BEHIND bytes behind `arrived`
    (from where `dropped` says the last call reached); returns the new mark.

    A large blob is read through the mount while it arrives; its readers just behind
    the fill take the latest arrival.HELD bytes from memory (`Arrival.held`), so this file's
    pages further back are seldom read again. On this machine (a virtual machine
    whose host takes back memory left free) touching memory the kernel has not
    touched lately costs about four times as much; dropped, these pages are the ones
    the next bytes use. Dirty pages are only written back by the first call over them
    (POSIX_FADV_DONTNEED), so each call covers the two steps before it again. A
    reader between arrival.HELD and DROP_BEHIND behind reads this file's page cache; one
    further behind reads from the disk."""
    behind = arrived - DROP_BEHIND
    if behind - dropped < DROP_STEP:
        return dropped
    start = max(0, dropped - 2 * DROP_STEP)
    os.posix_fadvise(fd, start, behind - start, os.POSIX_FADV_DONTNEED)
    return behind


def _hash_and_write(fd: int, chunk: bytes | memoryview, digest: Hash | None) -> None:
    """Hash `chunk` (unless `digest` is None) and write it to `fd`, a slice at a time.

    A chunk from the object store is a MiB or more, beyond this CPU's 1 MiB of L2
    cache: hashing it whole and then writing it whole read it from memory twice.
    Slice by slice, the write copies bytes the hash has just read. `perf record` on
    the mount during a cold read of 1 GiB put 21.5% of its samples in that copy
    (`copy_folio_from_iter_atomic`) before and 2.5% after (see the README)."""
    whole = memoryview(chunk)
    for start in range(0, len(whole), SLICE):
        view = whole[start:start + SLICE]
        if digest is not None:
            digest.update(view)
        while view:
            view = view[os.write(fd, view):]
