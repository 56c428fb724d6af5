"""How much of a blob being filled in the background has arrived, for its readers.

A large blob is read through the mount while it arrives in a host's read cache
(cache.py): each reader waits for the bytes of its own range, not for the whole
object, and the latest bytes the fill received are kept in memory (HELD), so the
readers just behind it take them without reading the file.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading

# The latest bytes a background fill keeps in memory, so that the readers just
# behind it take them without a copy (see `Arrival.held`).
HELD = 16 << 20


class Arrival:
    """How much of a blob being filled in the background has arrived.

    Each waiter is woken once, when its own range is there: the kernel keeps
    several reads of a cold file outstanding, and waking all of them at every chunk
    that arrives (a condition's notify_all) cost the mount a storm of thread
    switches per MiB."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrived = 0
        self.error: BaseException | None = None
        self.done = False
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, int, threading.Event]] = []  # a heap by end
        self._tickets = itertools.count()
        self._held: collections.deque[tuple[int, memoryview]] = collections.deque()
        self._held_bytes = 0

    @property
    def complete(self) -> bool:
        return self.done and self.error is None

    def wait_for(self, end: int) -> None:
        """Block until bytes [0, end) are here (or the fill ended); raise the fill's
        error, if it failed, whatever had arrived (the bytes are not to be trusted).
        A range that reaches the end waits for the hash's verdict too, so a reader
        of the whole blob learns of wrong bytes. Bounded: the fetch has the object
        store's request timeouts."""
        with self._lock:
            if not self._here(end):
                event = threading.Event()
                heapq.heappush(self._waiters, (end, next(self._tickets), event))
            else:
                event = None
        if event is not None:
            event.wait()
        if self.error is not None:
            raise OSError(f"reading the blob failed: {self.error}") from self.error

    def ready(self, end: int) -> bool:
        """Bytes [0, end) can be read now: they are here and the fill has not failed;
        a range to the end only once the hash said yes. Safe without the lock: a
        stale answer only means a wait."""
        return self.complete or (self.error is None and self.arrived >= end
                                 and end < self.size)

    def held(self, offset: int, size: int) -> bytes | memoryview | None:
        """Bytes [offset, offset + size) from the chunks the fill received last (no
        read of the file): a view of one chunk when it holds them all, else the
        pieces of the chunks joined; None when they are not all held, or `ready`
        says they may not be read yet. The mount's readers of a cold blob read just
        behind its fill, where this finds them."""
        end = offset + size
        if not self.ready(end):
            return None
        pieces: list[memoryview] = []
        with self._lock:
            for start, chunk in reversed(self._held):  # the newest first
                stop = start + len(chunk)
                if stop <= offset:
                    break
                if start < end:
                    pieces.append(chunk[max(offset, start) - start:min(end, stop) - start])
                if start <= offset:
                    return pieces[0] if len(pieces) == 1 else b"".join(reversed(pieces))
        return None

    def _here(self, end: int) -> bool:
        """A waiter for `end` may stop waiting: ready, or the fill has ended."""
        return self.done or self.ready(end)

    def _advance(self, count: int, chunk: bytes | memoryview | None = None) -> None:
        with self._lock:
            if chunk is not None:  # kept for `held`, the oldest let go past HELD
                self._held.append((self.arrived, memoryview(chunk)))
                self._held_bytes += len(chunk)
                while self._held_bytes > HELD and len(self._held) > 1:
                    self._held_bytes -= len(self._held.popleft()[1])
            self.arrived += count
            while self._waiters and self._here(self._waiters[0][0]):
                heapq.heappop(self._waiters)[2].set()

    def _finish(self, error: BaseException | None) -> None:
        with self._lock:
            self.error, self.done = error, True
            self._held.clear()  # the file has them all now (or they are not to be read)
            self._held_bytes = 0
            for _, _, event in self._waiters:
                event.set()
            self._waiters.clear()
