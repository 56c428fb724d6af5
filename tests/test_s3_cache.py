"""The read cache of an S3 blob store, on a real S3 server: one download for many
readers, right bytes while it evicts, a damaged cached file found and fetched again,
the writer's host keeps what it wrote, and a large blob is read while it arrives."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs.blobs import cache, s3
from casfs.blobs.arrival import HELD, Arrival
from casfs.blobs.cache import EARLY_FROM
from casfs.blobs.s3 import S3BlobStore

from .s3 import S3Server


@pytest.fixture
def make_store(s3_env: S3Server, tmp_path: Path) -> Iterator[object]:
    prefix = uuid.uuid4().hex

    def make(host: str, cache_size: int = 1 << 30) -> S3BlobStore:
        return S3BlobStore("casfs", prefix, tmp_path / host / "tmp", tmp_path / host / "cache",
                           cache_size)
    yield make


def put(store: S3BlobStore, data: bytes) -> str:
    staging = store.stage()
    try:
        staging.write(data, 0)
        return store.place(staging)[0]
    finally:
        staging.discard()


def read(store: S3BlobStore, sha256: str) -> bytes:
    fd = store.open_blob(sha256)
    try:
        return os.pread(fd, 64 << 20, 0)
    finally:
        os.close(fd)


def read_whole_early(store: S3BlobStore, sha256: str, size: int) -> bytes:
    """Every byte, through `open_blob_early` (waiting for them, and their verdict)."""
    fd, arrival = store.open_blob_early(sha256, size)
    try:
        if arrival is not None:
            arrival.wait_for(size)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def counting(store: S3BlobStore) -> list[str]:
    """Record every download the store starts."""
    downloads: list[str] = []
    fetch = store._fetch

    def counted(sha256: str, size: int | None = None) -> Iterator[memoryview]:
        downloads.append(sha256)
        return fetch(sha256, size)

    store._fetch = counted  # type: ignore[method-assign]
    return downloads


def test_the_writer_keeps_what_it_wrote_and_another_host_fetches_it_once(
        make_store: object) -> None:
    a, b = make_store("a"), make_store("b")  # type: ignore[operator]
    data = os.urandom(5 << 20)
    sha = put(a, data)
    downloads_a = counting(a)
    assert read(a, sha) == data and downloads_a == []  # from the writer's own cache
    downloads_b = counting(b)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(read(b, sha)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [data] * 8
    assert downloads_b == [sha]  # 8 readers of one cold blob: one download


def test_reads_stay_right_while_a_small_cache_evicts(make_store: object) -> None:
    writer = make_store("w")  # type: ignore[operator]
    blobs = {put(writer, os.urandom(300_000)): None for _ in range(12)}
    reader = make_store("r", cache_size=1_000_000)  # room for three
    expected = {sha: read(writer, sha) for sha in blobs}
    for _ in range(3):
        for sha, data in expected.items():
            assert read(reader, sha) == data
    cached = list((reader.cache.directory).glob("??/*"))
    assert len(cached) <= 4 and sum(p.stat().st_size for p in cached) <= 1_300_000


def test_a_damaged_cache_file_is_found_and_fetched_again(make_store: object) -> None:
    writer = make_store("w")  # type: ignore[operator]
    data = os.urandom(100_000)
    sha = put(writer, data)
    reader = make_store("r")  # type: ignore[operator]
    assert read(reader, sha) == data
    cached = reader.cache.path(sha)
    cached.chmod(0o644)
    cached.write_bytes(b"rot" + data[3:])
    fresh = make_store("r")  # a new process: it checks a cached file on first open
    downloads = counting(fresh)
    assert read(fresh, sha) == data and downloads == [sha]


def gated(store: S3BlobStore) -> tuple[threading.Event, list[str]]:
    """Downloads that deliver their first chunk, then wait for the gate to open."""
    gate, downloads = threading.Event(), []
    fetch = store._fetch

    def held(sha256: str, size: int | None = None) -> Iterator[memoryview]:
        downloads.append(sha256)
        for count, chunk in enumerate(fetch(sha256, size)):
            if count == 1:
                assert gate.wait(60), "the test never opened the gate"
            yield chunk

    store._fetch = held  # type: ignore[method-assign]
    return gate, downloads


def test_a_reader_of_the_first_bytes_does_not_wait_for_the_whole_object(
        make_store: object) -> None:
    data = os.urandom(EARLY_FROM * 3)
    sha = put(make_store("w"), data)  # type: ignore[operator]
    reader = make_store("r")  # type: ignore[operator]
    gate, downloads = gated(reader)
    fd, arrival = reader.open_blob_early(sha, len(data))
    second_fd, second = reader.open_blob_early(sha, len(data))  # another reader meanwhile
    try:
        assert arrival is not None and second is arrival
        arrival.wait_for(4096)  # returns while the rest of the object is held back
        assert os.pread(fd, 4096, 0) == data[:4096]
        assert not arrival.done and arrival.arrived < len(data)
        assert not reader.cache.path(sha).exists(), "kept before it was hashed"
        gate.set()
        arrival.wait_for(len(data))
        assert arrival.complete
        assert os.pread(second_fd, len(data), 0) == data
        assert reader.cache.path(sha).read_bytes() == data
        assert downloads == [sha]
    finally:
        gate.set()
        os.close(fd)
        os.close(second_fd)


def test_a_large_fill_with_wrong_bytes_fails_its_readers_and_is_not_kept(
        make_store: object) -> None:
    data = os.urandom(EARLY_FROM + 1000)
    sha = put(make_store("w"), data)  # type: ignore[operator]
    reader = make_store("r")  # type: ignore[operator]
    reader._fetch = lambda sha256, size=None: iter([b"x" * len(data)])  # type: ignore[method-assign]
    fd, arrival = reader.open_blob_early(sha, len(data))
    try:
        assert arrival is not None
        with pytest.raises(OSError, match="refused"):
            arrival.wait_for(len(data))  # a read to the end waits for the verdict
        with pytest.raises(OSError, match="refused"):
            arrival.wait_for(10)  # and after it, any read fails
        assert not reader.cache.path(sha).exists()
        assert list(reader.cache.directory.glob(".fill-*")) == []
    finally:
        os.close(fd)
    del reader._fetch  # the real server again: a later open fetches the right bytes
    assert read_whole_early(reader, sha, len(data)) == data


def test_a_damaged_large_cache_file_fails_its_readers_and_is_fetched_again(
        make_store: object) -> None:
    """Its first open in a process hashes it beside the readers (who need not wait)."""
    data = os.urandom(EARLY_FROM + 4096)
    sha = put(make_store("w"), data)  # type: ignore[operator]
    reader = make_store("r")  # type: ignore[operator]
    assert read(reader, sha) == data
    cached = reader.cache.path(sha)
    cached.chmod(0o644)
    with open(cached, "r+b") as f:
        f.seek(EARLY_FROM)
        f.write(b"rot")
    fresh = make_store("r")  # type: ignore[operator]
    fd, arrival = fresh.open_blob_early(sha, len(data))
    try:
        assert arrival is not None
        with pytest.raises(OSError, match="damaged"):
            arrival.wait_for(len(data))
    finally:
        os.close(fd)
    downloads = counting(fresh)
    assert read_whole_early(fresh, sha, len(data)) == data and downloads == [sha]


def test_a_large_fill_drops_its_pages_behind_and_its_readers_still_get_every_byte(
        make_store: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A background fill drops the page cache of its file behind the bytes arriving
    (cache._drop_behind); a reader that lags behind that point reads those bytes
    from the disk, and the kept file is whole."""
    monkeypatch.setattr(cache, "DROP_BEHIND", 1 << 20)
    monkeypatch.setattr(cache, "DROP_STEP", 256 << 10)
    drops: list[tuple[int, int]] = []
    advise = os.posix_fadvise

    def recorded(fd: int, offset: int, length: int, advice: int) -> None:
        drops.append((offset, length))
        advise(fd, offset, length, advice)

    monkeypatch.setattr(cache.os, "posix_fadvise", recorded)
    data = os.urandom(EARLY_FROM + (3 << 20))
    sha = put(make_store("w"), data)  # type: ignore[operator]
    reader = make_store("r")  # type: ignore[operator]
    fd, arrival = reader.open_blob_early(sha, len(data))
    try:
        assert arrival is not None
        arrival.wait_for(len(data))
        assert arrival.complete
        # Every byte once arrived was behind the drop point but the last MiB's.
        assert drops and drops[-1][0] + drops[-1][1] >= len(data) - (2 << 20)
        assert max(offset + length for offset, length in drops) <= len(data) - (1 << 20)
        for offset in range(0, len(data), 1 << 20):  # the lagging reader
            assert os.pread(fd, 1 << 20, offset) == data[offset:offset + (1 << 20)]
        assert reader.cache.path(sha).read_bytes() == data
    finally:
        os.close(fd)


def test_readers_just_behind_a_fill_take_its_latest_chunks_without_reading_the_file() -> None:
    """`Arrival.held`: a view of one chunk, or the pieces of two joined; nothing that
    has not arrived, nothing past what it holds, nothing to the end before the
    verdict, and nothing once the fill ended (the file has it all then)."""
    data = os.urandom(6 << 20)
    arrival = Arrival(len(data))
    pos = 0
    for size in (1_100_000, 1_050_000, 3_000_000):
        arrival._advance(size, memoryview(data)[pos:pos + size])
        pos += size
    one = arrival.held(0, 1 << 20)
    assert isinstance(one, memoryview) and bytes(one) == data[:1 << 20]
    two = arrival.held(1 << 20, 1 << 20)  # across the first two chunks
    assert two is not None and bytes(two) == data[1 << 20:2 << 20]
    assert arrival.held(pos - 10, 20) is None  # not all here yet
    arrival._advance(len(data) - pos, memoryview(data)[pos:])
    assert arrival.held(len(data) - 100, 100) is None  # the end waits for the verdict
    assert bytes(arrival.held(len(data) - 200, 100) or b"") == data[-200:-100]
    arrival._finish(None)
    assert arrival.held(0, 100) is None  # complete: read from the file


def test_a_fill_holds_only_its_latest_bytes() -> None:
    arrival = Arrival(64 << 20)
    chunk = memoryview(os.urandom(1 << 20))
    for _ in range(40):
        arrival._advance(len(chunk), chunk)
    assert arrival.held(0, 100) is None  # let go: past HELD behind the front
    assert arrival.held((40 << 20) - (HELD // 2), 100) is not None


def test_a_large_blob_comes_down_in_ranges_several_at_once_and_in_order(
        make_store: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """`S3BlobStore._ranges`: every byte, in order, whatever the last range's length;
    a range that fails fails the fill (and its readers), keeps nothing, and the next
    open fetches the blob again."""
    monkeypatch.setattr(s3, "RANGED_FROM", 2 << 20)
    monkeypatch.setattr(s3, "RANGE", 1 << 20)
    data = os.urandom(EARLY_FROM + 5 * (1 << 20) + 12345)  # 14 ranges, the last short
    sha = put(make_store("w"), data)  # type: ignore[operator]
    reader = make_store("r")  # type: ignore[operator]
    started: list[tuple[int, int]] = []
    start_range = reader._start_range

    def recorded(key: str, start: int, end: int) -> object:
        started.append((start, end))
        return start_range(key, start, end)

    monkeypatch.setattr(reader, "_start_range", recorded)
    assert read_whole_early(reader, sha, len(data)) == data
    assert started == [(start, min(start + (1 << 20), len(data)))
                       for start in range(0, len(data), 1 << 20)]

    failing = make_store("f")  # type: ignore[operator]
    failing_range = failing._start_range

    def broken(key: str, start: int, end: int) -> object:
        if start >= 4 << 20:
            key = key + "-gone"  # that range's GET finds nothing
        return failing_range(key, start, end)

    monkeypatch.setattr(failing, "_start_range", broken)
    fd, arrival = failing.open_blob_early(sha, len(data))
    try:
        assert arrival is not None
        with pytest.raises(OSError):
            arrival.wait_for(len(data))
        assert not failing.cache.path(sha).exists()
    finally:
        os.close(fd)
    monkeypatch.undo()
    assert read_whole_early(failing, sha, len(data)) == data
