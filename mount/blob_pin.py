"""A pinned blob: the open descriptor that keeps an open file's bytes readable.

An open file holds its version's blob open from the first open to the last
release, so unlink, rename-over, an overwrite elsewhere and gc do not reach it
(law 8). Reads run in worker threads, so the descriptor is closed only once it is
retired and no read is using it (a closed number could be reused under a read).
A blob still arriving from object storage is read as it comes: a reader waits for
the bytes of its own range (`Arrival`).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import TypeVar

import pyfuse3
import trio

from casfs.blobs.arrival import Arrival

log = logging.getLogger("casfs.mount")
T = TypeVar("T")


class BlobPin:
    """An open descriptor on a blob, closed once retired and no read is using it.

    A read runs in a worker thread; the descriptor it reads from must not be
    closed (and its number reused) under it when a finalize moves the file on.
    """

    def __init__(self, fd: int, arrival: Arrival | None = None) -> None:
        self.fd = fd
        self.arrival = arrival  # the bytes are still coming into the cache
        self._readers = 0
        self._retired = False
        self._reported = False

    @property
    def complete(self) -> bool:
        """Whether every byte of the blob is in its file and known good (nothing
        still arriving, no check of a cached file still running)."""
        return self.arrival is None or self.arrival.complete

    async def pread(self, size: int, offset: int) -> bytes | memoryview:
        """Bytes of the blob; of one still arriving, from what its fill just received
        when it holds them (no read of the file, no trip to a thread)."""
        self._readers += 1
        try:
            arrival = self.arrival
            if arrival is not None and (held := arrival.held(offset, size)) is not None:
                return held
            if arrival is None or arrival.ready(offset + size):
                return await trio.to_thread.run_sync(os.pread, self.fd, size, offset)
            def wait_and_read() -> bytes | memoryview:  # one trip to a thread, not two
                arrival.wait_for(offset + size)
                held = arrival.held(offset, size)
                return os.pread(self.fd, size, offset) if held is None else held
            # Not abandoned on cancel: the descriptor must stay open under the read.
            return await self._in_thread(wait_and_read, abandon_on_cancel=False)
        finally:
            self._readers -= 1
            self._close_if_done()

    async def _in_thread(self, job: Callable[[], T], abandon_on_cancel: bool = True) -> T:
        """`job()` in a worker thread; EIO (logged once) when the fetch failed."""
        try:
            return await trio.to_thread.run_sync(job, abandon_on_cancel=abandon_on_cancel)
        except OSError as e:
            if not self._reported:
                self._reported = True
                log.error("%s", e)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def arrived(self, end: int | None = None) -> None:
        """Wait until bytes [0, end) (all of them by default) are readable; EIO when
        their fetch failed, logged once."""
        arrival = self.arrival
        if arrival is None or arrival.complete:
            return
        end = arrival.size if end is None else end
        if not arrival.ready(end):
            await self._in_thread(lambda: arrival.wait_for(end))

    def retire(self) -> None:
        self._retired = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._retired and self._readers == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
