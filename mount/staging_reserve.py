"""Staging files made ahead of the creates that need them, on a thread of their own.

Making a file is a filesystem call, and it can take long: on this machine's ext4
(mounted without a journal), a new inode cost 0.4-1 ms of kernel CPU once a few
thousand files had been deleted in the minutes before (the allocator skips every
inode of the group deleted in the last minute or more: `find_inode_bit` ->
`recently_deleted` in `perf`), and a journaled filesystem may wait for its journal
there. A create, a truncate to nothing and the first write to an existing file each
need a staging file at once; made on the event loop, that call stalled every request
of the mount (timed in the daemon: create 0.80 ms, of which `stage()` 0.77). So a
thread keeps a few made, and a create takes one; when none is ready, it waits for
one made in a worker thread, and an error making it (ENOSPC, EMFILE) reaches that
create.

A closed file whose bytes were a dedup hit leaves a staging file no name holds; it
comes back here (`give_back`) and the thread empties it for another create, so a
stream of files the store already has (a second copy of a tree) frees and makes no
inode at all: freed inodes are what make the next ones slow to make on this disk.
The staging file of a new blob comes back too, and the thread closes it: the fstat
that tells the two apart and the close took 12-16% of a close's time on the event
loop (`py-spy --native`, 8 durable writers, and one writer's bulk load).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

import trio

from casfs.blobs.staging import StagingFile

log = logging.getLogger("casfs.mount")
KEEP = 8  # staging files kept ready: more than a few writers take between two refills
REFILL_AT = 4  # the thread wakes when this few are left, and makes them up to KEEP
RENEW_FROM = 4  # ... or when this many came back to be emptied
RETURNED_AT_MOST = 64  # given back and not yet seen to; more are discarded at once


class StagingReserve:
    """`await take()`: a new staging file from `make`, made ahead when it can be.

    The thread starts at the first take (a read-only mount never starts it), and
    `close()` stops it and discards the files nobody took."""

    def __init__(self, make: Callable[[], StagingFile], keep: int = KEEP,
                 refill_at: int = REFILL_AT) -> None:
        self._make = make
        self._keep = keep
        self._refill_at = refill_at
        self._ready: collections.deque[StagingFile] = collections.deque()
        self._returned: list[StagingFile] = []  # to empty, then ready
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.made_here = 0  # takes that found none ready (these three: for the metrics)
        self.made_ahead = 0
        self.reused = 0  # staging files given back and emptied for another create

    async def take(self) -> StagingFile:
        with self._changed:
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(target=self._refill, daemon=True,
                                                name="casfs-staging-reserve")
                self._thread.start()
            staging = self._ready.popleft() if self._ready else None
            if len(self._ready) <= self._refill_at:  # a wake-up per few takes, not each
                self._changed.notify()
        if staging is not None:
            return staging
        self.made_here += 1
        return await trio.to_thread.run_sync(self._make)

    def give_back(self, staging: StagingFile) -> None:
        """Done with `staging` (its file is registered): the thread empties it for
        another create when it can be (see `StagingFile.reusable`), else discards
        it. Both are system calls (an fstat, a close), so neither runs here, on the
        event loop, while the thread runs."""
        with self._changed:
            handed = not self._closing and self._thread is not None and \
                len(self._returned) < RETURNED_AT_MOST
            if handed:
                self._returned.append(staging)
                if len(self._returned) >= RENEW_FROM:
                    self._changed.notify()
        if not handed:
            staging.discard()

    def _refill(self) -> None:
        """Keep `keep` staging files ready until closed. A failure to make one is
        logged once in a row and tried again a second later; the creates meanwhile
        make their own, and report their own errors."""
        failing = False
        while True:
            with self._changed:
                if len(self._ready) >= self._keep:  # full: wait until few are left
                    self._changed.wait_for(
                        lambda: self._closing or len(self._ready) <= self._refill_at
                        or len(self._returned) >= RENEW_FROM)
                if self._closing:
                    return
                returned, self._returned = self._returned, []
            if returned:
                self._renew(returned)
                continue
            try:
                staging = self._make()
            except OSError as e:
                if not failing:
                    log.warning("could not make a staging file ahead (tried again each "
                                "second): %s", e)
                failing = True
                with self._changed:
                    self._changed.wait_for(lambda: self._closing, timeout=1.0)
                continue
            failing = False
            with self._changed:
                if self._closing:
                    staging.discard()
                    return
                self._ready.append(staging)
                self.made_ahead += 1

    def _renew(self, returned: list[StagingFile]) -> None:
        """Empty staging files given back, into the reserve, even when it is full:
        a file emptied now is one that the next creates need not make. Those that
        cannot be emptied (a blob's), those past RENEW_FROM over `keep` and those
        that fail to empty are discarded."""
        for staging in returned:
            with self._changed:
                room = not self._closing and len(self._ready) < self._keep + RENEW_FROM
            if not room or not staging.reusable():
                staging.discard()
                continue
            try:
                renewed = staging.reuse()
            except OSError as e:
                log.warning("could not empty a staging file for reuse: %s", e)
                continue
            with self._changed:
                self._ready.append(renewed)
                self.reused += 1

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        for staging in [*self._ready, *self._returned]:
            staging.discard()
        self._ready.clear()
        self._returned.clear()
