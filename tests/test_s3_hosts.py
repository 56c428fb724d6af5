"""Two hosts on PostgreSQL + S3, each with its own read cache, through real mounts:
a large file written on A is read right on B from a cold cache (sequentially, at
random offsets by several readers at once, mapped), and a cold read while the
object store is down fails with EIO and one log line, then works once it is back."""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs.blobs import s3
from casfs.blobs.cache import EARLY_FROM
from casfs.store import Store

from .conftest import FUSE_MISSING, Mounter
from .postgres import PostgresServer
from .s3 import S3Server

TIMEOUT_S = 2
# Both above the cache's EARLY_FROM (read while they arrive): one comes down in one
# GET, the other in ranges (from s3.RANGED_FROM on, the last one short).
SIZES = pytest.mark.parametrize("size", [s3.RANGED_FROM - (8 << 20), s3.RANGED_FROM + (8 << 20)],
                                ids=["one-get", "ranges"])


class S3Hosts:
    def __init__(self, tmp_path: Path, catalog: str, bucket: str) -> None:
        self.paths = {name: tmp_path / f"host-{name}" for name in ("a", "b")}
        for path in self.paths.values():
            Store.init(path, catalog=catalog, blobs=bucket).close()
        self.mounters = {name: Mounter(path, tmp_path / f"mnt-{name}")
                         for name, path in self.paths.items()}

    def mount(self, name: str) -> Path:
        return self.mounters[name].mount("cache_timeout=1")


@pytest.fixture
def hosts(tmp_path: Path, postgres_server: PostgresServer, s3_env: S3Server,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Hosts]:
    if FUSE_MISSING:
        pytest.skip(FUSE_MISSING)
    monkeypatch.setenv("CASFS_S3_TIMEOUT", str(TIMEOUT_S))
    made = S3Hosts(tmp_path, postgres_server.url(postgres_server.create_database()),
                   f"s3://casfs/{uuid.uuid4().hex}")
    try:
        yield made
    finally:
        for mounter in made.mounters.values():
            mounter.cleanup()


def written_on_a(hosts: S3Hosts, size: int) -> tuple[bytes, Path]:
    assert size >= EARLY_FROM
    a = hosts.mount("a")
    data = random.Random(7).randbytes(size)
    (a / "r" / "W1").mkdir(parents=True)
    (a / "r" / "W1" / "big.bin").write_bytes(data)
    b = hosts.mount("b")
    path = b / "r" / "W1" / "big.bin"
    deadline = time.monotonic() + 5
    while not path.exists():
        assert time.monotonic() < deadline, "the file never showed on b"
        time.sleep(0.05)
    return data, path


@SIZES
def test_a_large_file_written_on_a_reads_right_on_b_from_a_cold_cache(
        hosts: S3Hosts, size: int) -> None:
    data, path = written_on_a(hosts, size)
    assert not list((hosts.paths["b"] / "cache").glob("??/*")), "b's cache is not cold"
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with open(path, "rb", buffering=0) as f:
            for _ in range(20):
                offset = rng.randrange(size)
                got = os.pread(f.fileno(), 65536, offset)
                if got != data[offset:offset + 65536]:
                    errors.append(f"reader {seed}: wrong bytes at {offset}")

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert hashlib.sha256(mapped).digest() == hashlib.sha256(data).digest()
    assert subprocess.run(["cmp", "-", str(path)], input=data).returncode == 0
    cached = list((hosts.paths["b"] / "cache").glob("??/*"))
    assert [p.read_bytes() == data for p in cached] == [True], "one fill, kept"


@SIZES
def test_a_cold_read_while_the_store_is_down_fails_then_works(
        hosts: S3Hosts, s3_env: S3Server, size: int) -> None:
    data, path = written_on_a(hosts, size)
    log = hosts.paths["b"] / "log" / "mount.log"
    before = log.read_text() if log.exists() else ""
    s3_env.pause()
    try:
        started = time.monotonic()
        result = subprocess.run(["cat", str(path)], capture_output=True, timeout=120)
        took = time.monotonic() - started
    finally:
        s3_env.resume()
    assert result.returncode != 0 and b"Input/output error" in result.stderr
    assert took < 6 * TIMEOUT_S + 5, f"the read took {took:.1f} s"
    new_lines = [line for line in log.read_text()[len(before):].splitlines()
                 if "ERROR" in line]
    assert len(new_lines) == 1, new_lines  # the fill's failure, said once
    assert path.read_bytes() == data  # the store is back: the same read works
