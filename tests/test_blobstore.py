"""Law 1: a file under cas/ always holds exactly the bytes whose SHA-256 is its name."""

import errno
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from casfs.blobs import local as local_module
from casfs.blobs import staging as staging_module
from casfs.blobs.local import (
    OTHERS_PENDING_AT_MOST,
    SYNCFS_FROM,
    LocalBlobStore,
    little_else_to_write,
    pending_writeback,
)
from casfs.blobs.staging import StagingFile
from casfs.ingest import StoredBlob, place_blobs


def place(store: LocalBlobStore, staging: StagingFile) -> tuple[str, int, bool]:
    try:
        return store.place(staging)
    finally:
        staging.discard()


def staged(store: LocalBlobStore, data: bytes) -> StagingFile:
    staging = store.stage()
    staging.write(data, 0)
    return staging


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


def test_a_discarded_staging_file_is_closed_by_the_closer_and_its_number_kept_until_then(
        tmp_path: Path) -> None:
    """discard hands a synced file that no name holds to a thread of its own (closing
    it frees blocks the device may have to trim); the file is closed there, and the
    staging file never uses the number again. Others are closed at once."""
    store = blobs(tmp_path)
    staging = store.stage()
    staging.write(b"a dedup hit's bytes", 0)
    staging.finish()  # synced, as a durable close's bytes are
    fd = staging.fd
    staging.discard()
    assert staging.fd == -1
    staging_module._closer.submit(lambda: None).result()  # what was handed to it is done
    with pytest.raises(OSError) as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF
    with pytest.raises(OSError):
        staging.read(4, 0)  # a descriptor of -1, never another file's number
    for linked in (True, False):  # a placed blob, and bytes never synced (a bulk load)
        other = store.stage()
        other.write(b"a new blob's bytes" if linked else b"not synced", 0)
        if linked:
            store.place(other)
        fd = other.fd
        other.discard()  # closed at once
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_dedup_hit_syncs_the_blob_it_found_and_restore_syncs_its_own_bytes(
        tmp_path: Path) -> None:
    """A durable dedup hit makes the blob in place durable, not its own staged bytes,
    which no name holds; if gc removes the blob before the record is committed,
    restore links those bytes, and syncs them first (law 1)."""
    store = blobs(tmp_path)
    first, again = store.stage(), store.stage()
    for staging in (first, again):
        staging.write(b"fetched twice", 0)
    sha, _, is_new = store.place(first)
    assert is_new and first.on_disk
    assert store.place(again) == (sha, len(b"fetched twice"), False)
    assert not again.on_disk  # its bytes were never needed on disk
    store.path(sha).unlink()  # what a concurrent gc would do
    store.restore(again, sha)
    assert again.on_disk and store.path(sha).read_bytes() == b"fetched twice"
    for staging in (first, again):
        staging.discard()


def test_restore_brings_back_a_blob_removed_after_it_was_placed(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    staging.write(b"precious", 0)
    sha, _, _ = store.place(staging)
    store.path(sha).unlink()  # what a concurrent gc would do
    store.restore(staging, sha)
    staging.discard()
    assert store.path(sha).read_bytes() == b"precious"


def test_queued_writes_are_applied_in_order_by_whatever_touches_the_file(
        tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    staging.queue(b"hello ", 0)
    staging.queue(b"world", 6)
    assert (staging.size, staging.queued_bytes) == (11, 11)
    assert staging.read(100, 0) == b"hello world" and staging.queued_bytes == 0
    staging.queue(b"W", 6)  # inside the hashed prefix
    staging.queue(b"!!", 11)
    staging.truncate(12)  # applies the queue first
    staging.queue(b"?", 20)  # past the end: a hole of zeros
    expected = b"hello World!" + b"\0" * 8 + b"?"
    sha, size, _ = place(store, staging)
    assert size == 21 and sha == hashlib.sha256(expected).hexdigest()
    assert store.path(sha).read_bytes() == expected


def test_a_queued_write_that_failed_fails_every_later_call(tmp_path: Path) -> None:
    staging = StagingFile(None, os.open("/dev/full", os.O_WRONLY))
    staging.queue(b"x" * 10, 0)
    with pytest.raises(OSError) as info:
        staging.apply_queued()
    assert info.value.errno == errno.ENOSPC
    for call in (lambda: staging.queue(b"y", 10), staging.apply_queued, staging.digest,
                 lambda: staging.finish(fsync=False), lambda: staging.read(1, 0)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENOSPC
    staging.discard()
    assert staging.fd == -1


def test_a_drain_and_reads_in_other_threads_take_turns(tmp_path: Path) -> None:
    """The mount queues on its event loop while a worker thread drains and another
    reads: every read sees every write queued before it, and the hash is whole."""
    store = blobs(tmp_path)
    staging = store.stage()
    data = os.urandom(2 << 20)
    stop = threading.Event()
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            while not stop.is_set():
                staging.apply_queued()
        except BaseException as e:
            errors.append(e)

    drainer = threading.Thread(target=drain)
    drainer.start()
    try:
        for offset in range(0, len(data), 4096):
            staging.queue(data[offset:offset + 4096], offset)
            if offset and offset % (64 << 10) == 0:  # [offset / 2, +8 KiB) is queued
                start = offset // 2
                assert staging.read(8192, start) == data[start:start + 8192]
    finally:
        stop.set()
        drainer.join()
    assert errors == []
    sha, size, _ = place(store, staging)
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))


def test_discard_while_a_drain_writes_closes_after_it(tmp_path: Path) -> None:
    store = blobs(tmp_path)
    staging = store.stage()
    for offset in range(0, 32 << 20, 1 << 20):
        staging.queue(b"z" * (1 << 20), offset)
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            staging.apply_queued()
        except BaseException as e:
            errors.append(e)

    drainer = threading.Thread(target=drain)
    drainer.start()
    staging.discard()  # from the event loop: must not wait for the drain
    drainer.join()
    assert errors == [] and staging.fd == -1 and staging.queued_bytes == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_batch_syncs_once_only_when_little_else_waits_to_be_written() -> None:
    """A syncfs writes back the whole filesystem: a batch takes that way only while
    what else waits to be written back is small, and only when known."""
    own = 10 << 20
    assert little_else_to_write(own, own)
    assert little_else_to_write(own, own + OTHERS_PENDING_AT_MOST)
    assert not little_else_to_write(own, own + OTHERS_PENDING_AT_MOST + 1)
    assert not little_else_to_write(own, None)
    pending = pending_writeback()
    assert pending is not None and pending >= 0  # Linux says, in /proc/meminfo


@pytest.mark.parametrize("link_first", [False, True], ids=["sync-first", "link-first"])
@pytest.mark.parametrize("little_else_waits", [True, False], ids=["syncfs", "fsync-each"])
def test_a_batch_where_one_file_fails_answers_each_on_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, little_else_waits: bool,
        link_first: bool) -> None:
    """A round's blobs are placed as one batch; when one of them cannot be (its
    queued bytes could not be written), it gets its error and the others are
    placed as new blobs, whether the batch synced once or each on its own (which
    way depends on what else waits to be written: both are forced here), and
    whether it links first (a durable mount's round) or not."""
    monkeypatch.setattr(local_module, "little_else_to_write", lambda *_: little_else_waits)
    store = blobs(tmp_path)
    datas = [os.urandom(2048) for _ in range(SYNCFS_FROM + 1)]
    stagings = [store.stage() for _ in datas]
    broken = StagingFile(None, os.open("/dev/full", os.O_WRONLY))
    broken.queue(b"x" * 10, 0)
    stagings.insert(1, broken)
    try:
        for staging, data in zip(stagings[:1] + stagings[2:], datas, strict=True):
            staging.write(data, 0)
        answers = place_blobs(store, stagings, link_first=link_first)
    finally:
        for staging in stagings:
            staging.discard()
    assert isinstance(answers[1], OSError) and answers[1].errno == errno.ENOSPC
    placed = [a for k, a in enumerate(answers) if k != 1]
    assert all(isinstance(a, StoredBlob) for a in placed)
    for blob, data in zip(placed, datas, strict=True):
        assert isinstance(blob, StoredBlob)
        assert blob.sha256 == hashlib.sha256(data).hexdigest() and not blob.dedup_hit
        assert store.path(blob.sha256).read_bytes() == data


@pytest.mark.parametrize("little_else_waits", [True, False], ids=["syncfs", "fsync-each"])
def test_a_batch_linked_first_is_synced_whole_when_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, little_else_waits: bool) -> None:
    """A durable mount's round links its blobs before the sync: when the batch
    returns, each new blob's bytes are on disk (its staging file says so), a dedup
    hit's own bytes were not needed (restore syncs them if ever linked), and every
    blob holds its bytes, read-only."""
    monkeypatch.setattr(local_module, "little_else_to_write", lambda *_: little_else_waits)
    store = blobs(tmp_path)
    earlier = os.urandom(3000)
    place(store, staged(store, earlier))
    datas = [os.urandom(2048), earlier, os.urandom(100)]
    stagings = [staged(store, data) for data in datas]
    try:
        placed = store.place_batch(stagings, patient=False, link_first=True)
        assert [new for _, _, new in placed] == [True, False, True]
        on_disk = [s.on_disk for s in stagings]
        assert on_disk[0] and on_disk[2]
        assert on_disk[1] == little_else_waits  # a syncfs takes every byte there
    finally:
        for staging in stagings:
            staging.discard()
    for (sha, _, _), data in zip(placed, datas, strict=True):
        assert store.path(sha).read_bytes() == data
        assert not store.path(sha).stat().st_mode & 0o222
