"""Hearing what other hosts changed, and dropping what the kernel cached of it.

Where the catalog can announce its commits (PostgreSQL's LISTEN/NOTIFY), a thread
of the mount listens on a connection of its own and, for each change another
process or host made, tells the kernel to forget the name and the attributes
involved, so that `ls` and `stat` here show it at once instead of after
`cache_timeout`. Never needed for correctness: announcements made while the
connection was down are lost, and the cache timeout still bounds what any name or
attribute can lag. Contents need nothing: every open asks the catalog.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable

import pyfuse3

from casfs.catalog import Catalog
from casfs.catalog.changes import Change, DirectoryChange
from casfs.errors import CasfsError
from casfs.store import Store

log = logging.getLogger("casfs.mount")
POLL_S = 1.0  # how often the thread looks up from listening to see if it must stop
RETRY_S = 5.0  # how long it waits before it connects again after a failure


class ChangeListener:
    def __init__(self, store: Store, own_senders: Callable[[], set[str]],
                 forget_cached: Callable[[list[Change]], None],
                 invalidate: Callable[[Catalog, Change], None] | None = None) -> None:
        self.store = store
        self.forget_cached = forget_cached  # what the mount keeps of directories
        self.own = own_senders  # this mount's own connections: what it changed itself
        self.invalidate = invalidate or forget_in_kernel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="casfs-changes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=POLL_S * 5)

    def _run(self) -> None:
        catalog: Catalog | None = None
        failing = False
        while not self._stop.is_set():
            try:
                if catalog is None:
                    catalog = self.store.open_catalog(readonly=True)
                listen = getattr(catalog, "listen", None)
                if listen is None:
                    return  # this catalog announces nothing
                for sender, changes in listen(POLL_S):
                    if sender not in self.own():
                        self.forget_cached(changes)
                        for change in changes:
                            self.invalidate(catalog, change)
                    if self._stop.is_set():
                        break
                if failing:
                    log.info("listening to the catalog's announcements again")
                    failing = False
            except CasfsError as e:
                if not failing:
                    log.warning("not hearing other hosts' changes (%s); names and "
                                "attributes follow within cache_timeout meanwhile", e)
                    failing = True
                if catalog is not None:
                    catalog.close()
                    catalog = None
                self._stop.wait(RETRY_S)
        if catalog is not None:
            catalog.close()


def forget_in_kernel(catalog: Catalog, change: Change) -> None:
    """Drop the kernel's cached name and attributes (and pages) of one change."""
    if isinstance(change, DirectoryChange):
        _quietly(pyfuse3.invalidate_entry, change.parent_ino, change.name.encode())
        _quietly(pyfuse3.invalidate_inode, change.ino, True)
        return
    directory = catalog.find_directory(change.resolver, change.artifact_id)
    if directory is not None:
        _quietly(pyfuse3.invalidate_entry, directory.ino, change.basename.encode())
    _quietly(pyfuse3.invalidate_inode, change.ino, False)


def _quietly(function: Callable[..., None], *args: object) -> None:
    """The kernel answers ENOENT for what it does not hold: nothing to forget."""
    try:
        function(*args)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            log.debug("%s%r: %s", function.__name__, args, e)
