"""What a mount knows of the artifact directories it made and is filling
(mount/filled_directories.py): a name is known absent only while nothing but this
mount could have put it there."""

from __future__ import annotations

import time

import pytest

from casfs.catalog import ROOT_INO
from casfs.catalog.changes import DirectoryChange, DocumentChange
from casfs.mount.filled_directories import FilledDirectories
from casfs.records import Directory

W1 = Directory(ino=10, parent_ino=2, name="W1", resolver="r", artifact_id="W1",
               created_at=0.0, mtime_ns=0)
W2 = Directory(ino=11, parent_ino=2, name="W2", resolver="r", artifact_id="W2",
               created_at=0.0, mtime_ns=0)


def filling(*directories: Directory, ttl: float = 60.0) -> FilledDirectories:
    filled = FilledDirectories(ttl, enabled=True)
    for directory in directories:
        filled.made(directory)
    return filled


def test_a_name_this_mount_put_there_is_asked_and_any_other_is_absent() -> None:
    filled = filling(W1)
    assert filled.absent(W1, "a.pdf")
    filled.committed([DocumentChange(100, "r", "W1", "a.pdf")])
    assert not filled.absent(W1, "a.pdf")
    assert filled.absent(W1, "b.pdf")
    assert not filled.absent(W2, "b.pdf")  # not made by this mount: ask


def test_another_process_changing_the_directory_ends_the_knowledge() -> None:
    filled = filling(W1, W2)
    filled.announced([DocumentChange(100, "r", "W1", "theirs.pdf")])
    assert not filled.absent(W1, "x.pdf")
    assert filled.absent(W2, "x.pdf")
    filled.announced([DirectoryChange(12, 2, "W3")])  # directories moved: all of it
    assert not filled.absent(W2, "x.pdf")


def test_too_many_changes_to_list_end_the_knowledge() -> None:
    filled = filling(W1)
    filled.committed(None)
    assert not filled.absent(W1, "x.pdf")
    filled = filling(W1)
    filled.announced(None)
    assert not filled.absent(W1, "x.pdf")


def test_the_directory_renamed_or_removed_by_this_mount_ends_the_knowledge() -> None:
    filled = filling(W1, W2)
    filled.committed([DirectoryChange(W1.ino, W1.parent_ino, "W1-renamed")])
    assert not filled.absent(W1, "x.pdf")
    assert filled.absent(W2, "x.pdf")
    filled.committed([DirectoryChange(W1.parent_ino, ROOT_INO, "r2")])  # its resolver
    assert not filled.absent(W2, "x.pdf")


def test_a_directory_of_the_same_name_made_elsewhere_is_asked() -> None:
    filled = filling(W1)
    again = Directory(ino=99, parent_ino=2, name="W1", resolver="r", artifact_id="W1",
                      created_at=0.0, mtime_ns=0)
    assert not filled.absent(again, "x.pdf")


def test_the_knowledge_lasts_the_cache_timeout() -> None:
    filled = filling(W1, ttl=0.05)
    assert filled.absent(W1, "x.pdf")
    time.sleep(0.08)
    assert not filled.absent(W1, "x.pdf")


def test_an_embedded_catalog_keeps_nothing() -> None:
    filled = FilledDirectories(60.0, enabled=False)
    filled.made(W1)
    assert not filled.absent(W1, "x.pdf")


def test_what_is_kept_is_bounded_and_the_oldest_goes_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("casfs.mount.filled_directories.MAX_NAMES", 2)
    filled = filling(W1, W2)
    filled.committed([DocumentChange(100, "r", "W2", "a.pdf"),
                      DocumentChange(101, "r", "W2", "b.pdf"),
                      DocumentChange(102, "r", "W1", "c.pdf")])
    assert not filled.absent(W1, "x.pdf")  # the oldest went: asked again
    assert filled.absent(W2, "x.pdf") and not filled.absent(W2, "a.pdf")
