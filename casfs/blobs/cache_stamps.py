"""What a host's cache knows it has hashed: each cached file's stamp (inode, size,
modification and change times) taken when its bytes were last found right.

A cached file is hashed when it arrives, and used to be hashed again at its first
open in every process, so that a file damaged on disk is found. That cost every
remount a full re-read and hash of each cached blob before its readers could be
served from the page cache (a warm read of 1 GiB ran at 0.68-0.77x of a first read
from the local store, in `contrib/bench/s3.py --repeat 3`). A file whose stamp is
the one taken right after it was hashed has not been written since: any write,
truncate, chmod or utime through the filesystem moves its change time, and a new
file (a copy, a `rename` over it) has another inode. So such a file is trusted
without hashing, as git trusts a file whose stat matches its index; one that does
not match is hashed again, and dropped when its bytes are wrong. What this cannot
see is a change beneath the filesystem (a failing disk), which no open-time check
of a local blob sees either.

The stamps live in memory and in `<cache>/.stamps`, a log of lines appended as they
change (`<sha256> <ino> <size> <mtime_ns> <ctime_ns>`, or `<sha256> -` when one is
dropped), the last line of a blob winning, rewritten whole when it has grown well
past what it holds. It is never synced: a stamp lost in a crash only means one more
hash, and a line that does not read (torn by a crash, edited) is ignored, since a
stamp can only ever spare a hash when it matches the file exactly.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from casfs.blobs.staging import is_sha256_hex

log = logging.getLogger("casfs.blobs")

Stamp = tuple[int, int, int, int]  # st_ino, st_size, st_mtime_ns, st_ctime_ns
COMPACT_FROM = 1000  # lines appended before the log may be rewritten whole
# Stamps kept, the latest recorded; a file whose stamp was let go is hashed at its
# next open, as before stamps. A stamp takes about 370 bytes of the daemon's memory
# (measured with tracemalloc), so this bounds them to about 7 MiB; where a hash
# costs most, large files, this many cover a cache of any size that matters.
MAX_STAMPS = 20_000


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Stamps:
    """The stamps of one cache directory. Safe to share between threads; several
    processes may share the file (each rewrites it from what it holds: a stamp
    another one lost is one more hash, never a wrong answer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamps: dict[str, Stamp] = {}
        self._log: int | None = None  # the append descriptor, opened at the first change
        self._appended = 0
        self._failing = False
        self._load()

    def trusted(self, sha256: str, st: os.stat_result) -> bool:
        """Whether the file `st` describes is the one hashed right as `sha256`."""
        return self._stamps.get(sha256) == stamp_of(st)

    def record(self, sha256: str, st: os.stat_result) -> None:
        """The file `st` describes was just found (or made) right as `sha256`."""
        stamp = stamp_of(st)
        with self._lock:
            if self._stamps.get(sha256) == stamp:
                return
            self._keep(sha256, stamp)
            self._append(f"{sha256} {' '.join(map(str, stamp))}\n")

    def forget(self, sha256: str) -> None:
        with self._lock:
            if self._stamps.pop(sha256, None) is not None:
                self._append(f"{sha256} -\n")

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read %s (cached files are hashed again at their first open): %s",
                        self.path, e)
            return
        unread = 0
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1] == "-" and is_sha256_hex(fields[0]):
                self._stamps.pop(fields[0], None)
            elif len(fields) == 5 and is_sha256_hex(fields[0]) and \
                    all(f.isdigit() for f in fields[1:]):
                ino, size, mtime_ns, ctime_ns = (int(f) for f in fields[1:])
                self._keep(fields[0], (ino, size, mtime_ns, ctime_ns))
            else:
                unread += 1
        if unread:
            log.info("%s: %d line(s) that do not read were ignored", self.path, unread)
        self._appended = len(text.splitlines())

    def _keep(self, sha256: str, stamp: Stamp) -> None:
        """Keep a stamp as the latest, letting the oldest go past MAX_STAMPS."""
        self._stamps.pop(sha256, None)
        self._stamps[sha256] = stamp
        while len(self._stamps) > MAX_STAMPS:
            del self._stamps[next(iter(self._stamps))]

    def _append(self, line: str) -> None:
        """Add a line to the log (with the lock held); a log that cannot be written is
        said once, and the stamps are then kept in memory only."""
        try:
            if self._appended >= max(COMPACT_FROM, 2 * len(self._stamps)):
                self._rewrite()
                return  # the rewrite holds the new stamp already
            if self._log is None:
                self._log = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                    | os.O_CLOEXEC, 0o600)
            os.write(self._log, line.encode("ascii"))
            self._appended += 1
            self._failing = False
        except OSError as e:
            if not self._failing:
                log.warning("cannot write %s (stamps kept in memory only): %s", self.path, e)
            self._failing = True

    def _rewrite(self) -> None:
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        lines = "".join(f"{sha} {' '.join(map(str, stamp))}\n"
                        for sha, stamp in self._stamps.items())
        try:
            partial.write_text(lines, encoding="ascii")
            os.replace(partial, self.path)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        if self._log is not None:
            os.close(self._log)
            self._log = None
        self._appended = len(self._stamps)
