"""Directories a mount has looked up, kept for `cache_timeout` when the catalog is
across the network.

Every lookup, create and getattr needs its parent directory; on PostgreSQL each of
those is a round trip. Directories change rarely (mkdir, rmdir, rename, touch), so
a mount keeps what it found, as the kernel keeps names and attributes: for at most
`cache_timeout`, dropped at once when this mount changes a directory and when
another host's change is announced. On an embedded catalog the query is cheaper
than the bookkeeping, so nothing is kept.
"""

from __future__ import annotations

import time

from casfs.records import Directory

MAX_ENTRIES = 100_000


class DirectoryCache:
    def __init__(self, ttl: float, enabled: bool) -> None:
        self.ttl = ttl
        self.enabled = enabled and ttl > 0
        self._entries: dict[int, tuple[Directory, float]] = {}

    def get(self, ino: int) -> Directory | None:
        entry = self._entries.get(ino)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop(ino, None)
            return None
        return entry[0]

    def put(self, directory: Directory) -> None:
        if not self.enabled:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)), None)  # the oldest
        self._entries[directory.ino] = (directory, time.monotonic() + self.ttl)

    def forget(self, ino: int | None = None) -> None:
        """Drop one directory, or all (a rename moves what is below it too). Safe
        from another thread: each step is one dict operation."""
        if ino is None:
            self._entries.clear()
        else:
            self._entries.pop(ino, None)
