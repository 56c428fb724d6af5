"""The listing cache of a mount on a remote catalog: names looked up one by one are
answered from one fetch of the directory, and never more stale than the kernel's own
cache. Through real mounts on two hosts: tests/test_two_hosts.py."""

from __future__ import annotations

import time

from casfs.catalog.changes import DirectoryChange, DocumentChange
from casfs.mount.listing_cache import READ_HEAVY, ListingCache
from casfs.records import Directory, Document

W1 = Directory(
    ino=10, parent_ino=2, name="W1", resolver="r", artifact_id="W1", created_at=0.0, mtime_ns=0
)


def doc(ino: int, name: str) -> Document:
    return Document(
        id=ino,
        ino=ino,
        artifact_id="W1",
        resolver="r",
        source_url=None,
        basename=name,
        content_type=None,
        bytes=1,
        sha256="0" * 64,
        storage_uri="",
        run_id=None,
        created_at=0.0,
        updated_at=0.0,
        mtime_ns=0,
        valid_from=0.0,
        valid_to=None,
        change=None,
    )


def read_heavy(cache: ListingCache) -> int:
    started = None
    for _ in range(READ_HEAVY):
        started = cache.wants(W1)
    assert started is not None
    return started


def test_a_directory_is_fetched_once_it_is_read_name_by_name() -> None:
    cache = ListingCache(ttl=60, enabled=True)
    for _ in range(READ_HEAVY - 1):
        assert cache.wants(W1) is None
    started = cache.wants(W1)
    assert started is not None
    cache.keep(W1, [doc(20, "a.pdf"), doc(21, "b.pdf")], started)
    names = cache.names(W1)
    assert names is not None and sorted(names) == ["a.pdf", "b.pdf"]


def test_a_change_drops_the_listing_and_a_fetch_it_overlapped_is_not_kept() -> None:
    cache = ListingCache(ttl=60, enabled=True)
    started = read_heavy(cache)
    cache.drop([DocumentChange(22, "r", "W1", "c.pdf")])  # landed while fetching
    cache.keep(W1, [doc(20, "a.pdf")], started)
    assert cache.names(W1) is None
    cache.keep(W1, [doc(20, "a.pdf")], read_heavy(cache))
    assert cache.names(W1) is not None
    cache.drop([DocumentChange(20, "r", "OTHER", "a.pdf")])
    assert cache.names(W1) is not None, "another directory's change keeps this one"
    cache.drop([DirectoryChange(10, 2, "W1-renamed")])
    assert cache.names(W1) is None, "a directory change drops every listing"
    cache.keep(W1, [], read_heavy(cache))
    cache.drop(None)
    assert cache.names(W1) is None, "too many changes to name: everything goes"


def test_a_listing_lives_at_most_the_cache_timeout() -> None:
    cache = ListingCache(ttl=0.05, enabled=True)
    cache.keep(W1, [doc(20, "a.pdf")], read_heavy(cache))
    assert cache.names(W1) is not None
    time.sleep(0.06)
    assert cache.names(W1) is None


def test_nothing_is_kept_on_an_embedded_catalog() -> None:
    cache = ListingCache(ttl=60, enabled=False)
    assert all(cache.wants(W1) is None for _ in range(READ_HEAVY * 2))


def test_a_directory_being_written_is_not_fetched_over_and_over() -> None:
    cache = ListingCache(ttl=60, enabled=True)
    for i in range(50):  # lookup of the new name, create, close: one change each
        assert cache.wants(W1) is None
        cache.drop([DocumentChange(100 + i, "r", "W1", f"f{i}")])
