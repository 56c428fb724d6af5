"""The documents of artifact directories being read name by name, kept for
`cache_timeout` when the catalog is across the network.

A program that stats or opens the files of a directory one by one (`find -newer`,
a loader walking a listing it read earlier, pandas globbing) makes the kernel look
up each name, and on PostgreSQL each lookup is a round trip: 10,000 fresh names cost
4x what they cost on SQLite. A directory looked up READ_HEAVY times since it last
changed is fetched whole, in one query, and its names answered from memory after.

Never stale beyond the kernel's own promise: a listing lives at most `cache_timeout`
(as the kernel keeps names), and is dropped when a transaction of this mount changes
the directory (the catalog writer drains each connection's committed changes) or
another host's change is announced. A listing fetched while a change landed is not
kept: every drop moves a clock, and a fetch that started before the last drop of its
directory is thrown away. Directories being written count no lookups toward a fetch
(each change resets the count), so a create-heavy directory is never fetched over and
over. On an embedded catalog a point query is cheaper than all this: nothing is kept.
"""

from __future__ import annotations

import threading
import time

from casfs.catalog.changes import Change, DocumentChange
from casfs.records import Directory, Document

READ_HEAVY = 3  # lookups since the last change before a directory is fetched whole
MAX_LISTING = 50_000  # documents; a bigger directory is asked name by name
MAX_KEPT = 200_000  # documents over all listings
MAX_DROPS = 10_000  # remembered drop times before they are forgotten wholesale

Key = tuple[str, str]  # (resolver, artifact_id)


class ListingCache:
    def __init__(self, ttl: float, enabled: bool) -> None:
        self.ttl = ttl
        self.enabled = enabled and ttl > 0
        self._lock = threading.Lock()  # the change listener drops from its thread
        self._listings: dict[Key, tuple[dict[str, Document] | None, float]] = {}
        self._kept = 0
        self._lookups: dict[Key, int] = {}
        self._clock = 0
        self._dropped: dict[Key, int] = {}
        self._all_dropped = 0

    def names(self, directory: Directory) -> dict[str, Document] | None:
        """The directory's documents by name when a listing is kept, else None."""
        key = _key(directory)
        entry = self._listings.get(key)
        if entry is None:
            return None
        listing, expires = entry
        if expires < time.monotonic():
            with self._lock:
                self._remove(key)
            return None
        return listing

    def wants(self, directory: Directory) -> int | None:
        """Count a lookup by name; when the directory should now be fetched whole,
        the clock to hand back to `keep`, else None."""
        if not self.enabled:
            return None
        key = _key(directory)
        with self._lock:
            if key in self._listings:  # too big to keep: asked name by name
                return None
            if len(self._lookups) > MAX_DROPS:
                self._lookups.clear()
            count = self._lookups.get(key, 0) + 1
            self._lookups[key] = count
            return self._clock if count >= READ_HEAVY else None

    def keep(self, directory: Directory, documents: list[Document], started: int) -> None:
        """Keep what a fetch that began at clock `started` found: all the documents,
        or more than MAX_LISTING (then the directory is marked too big)."""
        key = _key(directory)
        with self._lock:
            if self._dropped.get(key, 0) > started or self._all_dropped > started:
                return  # changed while the fetch ran: its answer may be stale
            self._remove(key)
            listing = {d.basename: d for d in documents} \
                if len(documents) <= MAX_LISTING else None
            size = len(listing) if listing else 0
            while self._listings and self._kept + size > MAX_KEPT:
                self._remove(next(iter(self._listings)))  # the oldest
            self._listings[key] = (listing, time.monotonic() + self.ttl)
            self._kept += size
            self._lookups.pop(key, None)

    def drop(self, changes: list[Change] | None) -> None:
        """Forget the directories these committed changes touched (None: all of
        them). A directory change (rename, rmdir) drops everything: it moves names."""
        if not self.enabled:
            return  # nothing kept (an embedded catalog): called on its every commit
        with self._lock:
            self._clock += 1
            if changes is None or any(not isinstance(c, DocumentChange) for c in changes):
                self._listings.clear()
                self._lookups.clear()
                self._dropped.clear()
                self._kept = 0
                self._all_dropped = self._clock
                return
            for change in changes:
                assert isinstance(change, DocumentChange)
                key = (change.resolver, change.artifact_id)
                self._remove(key)
                self._lookups.pop(key, None)
                self._dropped[key] = self._clock
            if len(self._dropped) > MAX_DROPS:
                self._dropped.clear()
                self._all_dropped = self._clock

    def _remove(self, key: Key) -> None:
        entry = self._listings.pop(key, None)
        if entry is not None and entry[0] is not None:
            self._kept -= len(entry[0])


def _key(directory: Directory) -> Key:
    return (directory.resolver, directory.artifact_id or "")
