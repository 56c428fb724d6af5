"""Artifact directories this mount made and is filling: a name it did not put there
is known absent, without asking the catalog.

A pipeline makes an artifact directory and copies its files in. The kernel looks
every new name up before it creates it, and on PostgreSQL each of those lookups is
a round trip that can only answer "absent". When this mount made the directory, it
knows every name in it: the ones it registered, renamed or linked there (its own
commits say so) and the files still open (the mount asks those first).

Never staler than the kernel's own promise: the knowledge lives `cache_timeout`
from the mkdir, and is dropped as soon as another process's change to the
directory is announced, or a directory that holds it is renamed or removed. Between
an answer and the create that follows, another host may make the name anyway; the
registration at close settles that race, as it does for an answer from the catalog
(see absent_names.py). On an embedded catalog a point query is cheaper than this:
nothing is kept.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from casfs.catalog import ROOT_INO
from casfs.catalog.changes import Change, DirectoryChange, DocumentChange
from casfs.records import Directory

MAX_DIRECTORIES = 10_000  # directories kept; more drop the oldest
MAX_NAMES = 50_000  # names in one directory; beyond, it is asked name by name

Key = tuple[str, str]  # (resolver, artifact_id)


@dataclass
class _Filling:
    ino: int
    expires: float
    names: set[str] = field(default_factory=set)


class FilledDirectories:
    def __init__(self, ttl: float, enabled: bool) -> None:
        self.ttl = ttl
        self.enabled = enabled and ttl > 0
        self._lock = threading.Lock()  # commits and announcements arrive on threads
        self._filling: dict[Key, _Filling] = {}

    def made(self, directory: Directory) -> None:
        """This mount just made `directory` (committed): it holds no names yet."""
        if not self.enabled or directory.artifact_id is None:
            return
        with self._lock:
            if len(self._filling) >= MAX_DIRECTORIES:
                del self._filling[next(iter(self._filling))]  # the oldest
            self._filling[_key(directory)] = _Filling(directory.ino,
                                                      time.monotonic() + self.ttl)

    def absent(self, directory: Directory, name: str) -> bool:
        """True when `name` is surely not in `directory` (this mount made it and put
        no such name there); False when the catalog must be asked."""
        if not self.enabled:
            return False
        key = _key(directory)
        with self._lock:
            filling = self._filling.get(key)
            if filling is None or filling.ino != directory.ino:
                return False
            if filling.expires < time.monotonic():
                del self._filling[key]
                return False
            return name not in filling.names

    def committed(self, changes: list[Change] | None) -> None:
        """What this mount's own transaction committed: names it put in a directory
        it fills are remembered; a directory that holds one renamed or removed, or
        changes too many to list, drop what they may have moved."""
        if not self.enabled:
            return
        with self._lock:
            if changes is None:
                self._filling.clear()
                return
            for change in changes:
                if isinstance(change, DocumentChange):
                    filling = self._filling.get((change.resolver, change.artifact_id))
                    if filling is not None:
                        filling.names.add(change.basename)
                        if len(filling.names) > MAX_NAMES:
                            del self._filling[(change.resolver, change.artifact_id)]
                else:
                    self._directory_changed(change)

    def announced(self, changes: list[Change] | None) -> None:
        """Another process changed these places: forget every directory they touch
        (all of them for a change of directories, or of too many places)."""
        if not self.enabled:
            return
        with self._lock:
            if changes is None or any(isinstance(c, DirectoryChange) for c in changes):
                self._filling.clear()
                return
            for change in changes:
                assert isinstance(change, DocumentChange)
                self._filling.pop((change.resolver, change.artifact_id), None)

    def _directory_changed(self, change: DirectoryChange) -> None:
        if change.parent_ino == ROOT_INO:  # a resolver: its artifacts' keys may move
            self._filling.clear()
            return
        for key, filling in list(self._filling.items()):
            if filling.ino == change.ino:  # renamed or removed by this mount
                del self._filling[key]


def _key(directory: Directory) -> Key:
    return (directory.resolver, directory.artifact_id or "")
