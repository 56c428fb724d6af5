"""Law 1: a file under cas/ always holds exactly the bytes whose SHA-256 is its name."""

import hashlib
import os
import stat
import threading
from pathlib import Path

from casfs.blobs.local import LocalBlobStore
from casfs.blobs.staging import StagingFile


def place(store: LocalBlobStore, staging: StagingFile) -> tuple[str, int, bool]:
    try:
        return store.place(staging)
    finally:
        staging.discard()


def blobs(tmp_path: Path) -> LocalBlobStore:
    (tmp_path / "cas").mkdir()
    (tmp_path / "tmp").mkdir()
    return LocalBlobStore(tmp_path / "cas", tmp_path / "tmp")


def test_place_names_the_blob_by_its_hash_and_makes_it_read_only(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    staging.write(b"hello ", 0)
    staging.write(b"world", 6)
    sha, size, is_new = place(store, staging)
    assert sha == hashlib.sha256(b"hello world").hexdigest() and size == 11 and is_new
    path = store.path(sha)
    assert path.read_bytes() == b"hello world"
    assert path.parent.name == sha[:2] and path.name == sha[2:]
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert list((tmp_path / "tmp").iterdir()) == []


def test_out_of_order_writes_and_truncates_are_rehashed(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    staging.write(b"xxxxxxxxxx", 0)
    staging.write(b"AB", 3)  # inside the hashed prefix
    staging.write(b"tail", 20)  # leaves a hole of zeros
    staging.truncate(22)
    expected = b"xxxABxxxxx" + b"\0" * 10 + b"ta"
    sha, size, _ = place(store, staging)
    assert size == 22
    assert sha == hashlib.sha256(expected).hexdigest()
    assert store.path(sha).read_bytes() == expected


def test_the_same_bytes_twice_is_one_blob_and_a_dedup_hit(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    results = []
    for _ in range(2):
        staging = store.stage()
        staging.write(b"same", 0)
        results.append(place(store, staging))
    assert results[0][2] is True and results[1][2] is False
    assert len(list((tmp_path / "cas").rglob("*/*/*"))) == 1


def test_concurrent_writers_of_the_same_bytes_leave_one_intact_blob(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    data = os.urandom(3 << 20)
    outcomes: list[bool] = []

    def writer() -> None:
        staging = store.stage()
        for offset in range(0, len(data), 1 << 16):
            staging.write(data[offset:offset + (1 << 16)], offset)
        outcomes.append(place(store, staging)[2])

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False, False, False, True]
    blob = store.path(hashlib.sha256(data).hexdigest())
    assert blob.read_bytes() == data
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_discarded_staging_file_leaves_nothing(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    staging.write(b"partial", 0)
    staging.discard()
    staging.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "cas").rglob("*")) == []


def test_restore_brings_back_a_blob_removed_after_it_was_placed(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    staging.write(b"precious", 0)
    sha, _, _ = store.place(staging)
    store.path(sha).unlink()  # what a concurrent gc would do
    store.restore(staging, sha)
    staging.discard()
    assert store.path(sha).read_bytes() == b"precious"
