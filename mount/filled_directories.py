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
MAX_NAMES = 200_000  # names kept over all directories; more drop the oldest directories

Key = tuple[str, str]  # (resolver, artifact_id)


@dataclass
class _Filling:
    key: Key
    expires: float
    names: set[str] = field(default_factory=set)


class FilledDirectories:
    """Kept by directory inode, oldest first (so also soonest to expire), with the
    inode of each (resolver, artifact_id): commits and announcements name places by
    key, directory changes by inode, and each finds its entry in one step."""

    def __init__(self, ttl: float, enabled: bool) -> None:
        self.ttl = ttl
        self.enabled = enabled and ttl > 0
        self._lock = threading.Lock()  # commits and announcements arrive on threads
        self._filling: dict[int, _Filling] = {}
        self._ino_of: dict[Key, int] = {}
        self._names = 0

    def made(self, directory: Directory) -> None:
        """This mount just made `directory` (committed): it holds no names yet."""
        if not self.enabled or directory.artifact_id is None:
            return
        key, now = _key(directory), time.monotonic()
        with self._lock:
            self._forget(self._ino_of.get(key))
            self._filling[directory.ino] = _Filling(key, now + self.ttl)
            self._ino_of[key] = directory.ino
            self._trim(now)

    def absent(self, directory: Directory, name: str) -> bool:
        """True when `name` is surely not in `directory` (this mount made it and put
        no such name there); False when the catalog must be asked."""
        if not self.enabled:
            return False
        with self._lock:
            filling = self._filling.get(directory.ino)
            if filling is None or filling.key != _key(directory):
                return False
            if filling.expires < time.monotonic():
                self._forget(directory.ino)
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
                self._clear()
                return
            for change in changes:
                if isinstance(change, DocumentChange):
                    ino = self._ino_of.get((change.resolver, change.artifact_id))
                    if ino is not None and change.basename not in self._filling[ino].names:
                        self._filling[ino].names.add(change.basename)
                        self._names += 1
                elif change.parent_ino == ROOT_INO:  # a resolver: its artifacts' keys move
                    self._clear()
                else:  # an artifact directory renamed or removed by this mount
                    self._forget(change.ino)
            self._trim(time.monotonic())

    def announced(self, changes: list[Change] | None) -> None:
        """Another process changed these places: forget every directory they touch
        (all of them for a change of directories, or of too many places)."""
        if not self.enabled:
            return
        with self._lock:
            if changes is None or any(isinstance(c, DirectoryChange) for c in changes):
                self._clear()
                return
            for change in changes:
                assert isinstance(change, DocumentChange)
                self._forget(self._ino_of.get((change.resolver, change.artifact_id)))

    def _trim(self, now: float) -> None:
        """Drop the oldest directories while they expired or too much is kept."""
        while self._filling:
            ino, oldest = next(iter(self._filling.items()))
            if oldest.expires >= now and len(self._filling) <= MAX_DIRECTORIES \
                    and self._names <= MAX_NAMES:
                return
            self._forget(ino)

    def _forget(self, ino: int | None) -> None:
        filling = self._filling.pop(ino, None) if ino is not None else None
        if filling is not None:
            self._names -= len(filling.names)
            if self._ino_of.get(filling.key) == ino:
                del self._ino_of[filling.key]

    def _clear(self) -> None:
        self._filling.clear()
        self._ino_of.clear()
        self._names = 0


def _key(directory: Directory) -> Key:
    return (directory.resolver, directory.artifact_id or "")
