"""Two hosts, one store: two store directories on one PostgreSQL catalog and one shared
blob directory, each mounted, as two machines would have them (and a third store
directory for the operator's gc). Runs only on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs import fsck
from casfs.store import Store

from .conftest import Mounter
from .postgres import PostgresServer

CACHE_TIMEOUT = 2.0


class Hosts:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.url = url
        self.shared = tmp_path / "shared-blobs"
        self.paths = {name: tmp_path / f"host-{name}" for name in ("a", "b", "ops")}
        for path in self.paths.values():
            Store.init(path, catalog=url, blobs=f"file://{self.shared}").close()
        self.mounters = {name: Mounter(self.paths[name], tmp_path / f"mnt-{name}")
                         for name in ("a", "b")}

    def mount(self, name: str, *options: str) -> Path:
        return self.mounters[name].mount(f"cache_timeout={CACHE_TIMEOUT:g}", *options)

    def cleanup(self) -> None:
        for mounter in self.mounters.values():
            mounter.cleanup()


@pytest.fixture
def hosts(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Hosts]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    made = Hosts(tmp_path, postgres_server.url(postgres_server.create_database()))
    try:
        yield made
    finally:
        made.cleanup()


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False, timeout=300)


def blob_count(shared: Path) -> int:
    return sum(1 for p in (shared / "cas" / "sha256").rglob("*") if p.is_file())


def test_a_file_written_on_a_is_read_on_b(hosts: Hosts) -> None:
    a, b = hosts.mount("a"), hosts.mount("b")
    (a / "unpaywall" / "W1").mkdir(parents=True)
    (a / "unpaywall" / "W1" / "p.pdf").write_bytes(b"%PDF from host a")
    deadline = time.monotonic() + CACHE_TIMEOUT + 1
    seen = b / "unpaywall" / "W1" / "p.pdf"
    while not seen.exists():
        assert time.monotonic() < deadline, "the file never showed on host b"
        time.sleep(0.02)
    assert seen.read_bytes() == b"%PDF from host a"
    # An overwrite on b is what the next open on a reads.
    seen.write_bytes(b"rewritten on host b, longer")
    assert (a / "unpaywall" / "W1" / "p.pdf").read_bytes() == b"rewritten on host b, longer"


def test_the_same_bytes_on_both_hosts_make_one_blob_and_two_records(hosts: Hosts) -> None:
    a, b = hosts.mount("a"), hosts.mount("b")
    data = os.urandom(100_000)
    (a / "r" / "A").mkdir(parents=True)
    (b / "r" / "B").mkdir(parents=True)
    barrier = threading.Barrier(2)

    def write(path: Path) -> None:
        barrier.wait()
        path.write_bytes(data)

    threads = [threading.Thread(target=write, args=(p,)) for p in
               (a / "r" / "A" / "x.bin", b / "r" / "B" / "x.bin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert blob_count(hosts.shared) == 1
    with Store.open(hosts.paths["ops"]) as store:
        assert store.catalog.stats()["documents"] == 2


def _delays(writer: Path, reader: Path, rounds: int) -> list[float]:
    """Seconds from a close on one host until stat on the other shows the new size."""
    delays = []
    for i in range(rounds):
        writer.write_bytes(b"x" * (100 + i))
        reader.stat()  # the kernel on the reader caches the old size now
        writer.write_bytes(b"x" * (1000 + i))
        start = time.monotonic()
        while reader.stat().st_size != 1000 + i:
            assert time.monotonic() - start < CACHE_TIMEOUT + 2, "never showed"
            time.sleep(0.005)
        delays.append(time.monotonic() - start)
    return delays


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "no-notify"])
def test_changes_show_on_the_other_host_within_cache_timeout(hosts: Hosts,
                                                             notify: bool) -> None:
    """Within cache_timeout always; sooner with the catalog's announcements. The
    median delay is printed for the README (`pytest -s -k show_on_the_other`)."""
    a = hosts.mount("a")
    b = hosts.mount("b", *(() if notify else ("nonotify",)))
    (a / "t" / "W").mkdir(parents=True)
    path_a = a / "t" / "W" / "f.txt"
    path_a.write_bytes(b"0")
    path_b = b / "t" / "W" / "f.txt"
    while not path_b.exists():
        time.sleep(0.01)
    delays = _delays(path_a, path_b, 5)
    print(f"\nmedian delay, {'with' if notify else 'without'} notifications: "
          f"{statistics.median(delays) * 1000:.0f} ms (max {max(delays) * 1000:.0f} ms)")
    assert max(delays) <= CACHE_TIMEOUT + 1


def test_gc_from_a_third_directory_never_deletes_a_blob_in_use(hosts: Hosts) -> None:
    a, b = hosts.mount("a"), hosts.mount("b")
    stop = time.monotonic() + float(os.environ.get("CASFS_STRESS_SECONDS", "8"))
    shared_payloads = [f"payload {i}".encode() * 300 for i in range(3)]
    committed: dict[Path, bytes] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(root: Path, k: int) -> None:
        directory = root / "stress" / f"W{k}"
        directory.mkdir(parents=True, exist_ok=True)
        i = 0
        try:
            while time.monotonic() < stop:
                path = directory / f"f{i % 5}.bin"
                data = shared_payloads[i % 3] if i % 2 else os.urandom(5000)
                path.write_bytes(data)
                with lock:
                    committed[path] = data
                if i % 4 == 3:
                    path.unlink()
                    with lock:
                        del committed[path]
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(root, k))
               for k, root in enumerate((a, b, a, b))]
    for t in threads:
        t.start()
    rounds = 0
    while time.monotonic() < stop:
        result = casfs(hosts.paths["ops"], "gc", "--grace", "0", "--keep-history", "0",
                       "--apply", "--json")
        assert result.returncode == 0, result.stderr
        rounds += 1
    for t in threads:
        t.join()
    assert not errors, errors
    assert rounds >= 2
    for path, data in committed.items():
        assert path.read_bytes() == data, path
    with Store.open(hosts.paths["ops"]) as store:
        assert fsck.fsck(store) == []


def test_killing_host_a_loses_nothing_either_host_committed(hosts: Hosts) -> None:
    a, b = hosts.mount("a"), hosts.mount("b")
    (a / "k" / "A").mkdir(parents=True)
    (b / "k" / "B").mkdir(parents=True)
    written = {}
    for i in range(20):
        for root, artifact in ((a, "A"), (b, "B")):
            data = os.urandom(3000 + i)
            (root / "k" / artifact / f"{i}.bin").write_bytes(data)
            written[f"{artifact}/{i}.bin"] = hashlib.sha256(data).hexdigest()
    pidfile = next((hosts.paths["a"] / "run").glob("mount-*.json"))
    os.kill(json.loads(pidfile.read_text())["pid"], signal.SIGKILL)
    time.sleep(0.2)
    a = hosts.mount("a")  # recovers the dead mountpoint
    for root in (a, b):
        for name, sha in written.items():
            assert hashlib.sha256((root / "k" / name).read_bytes()).hexdigest() == sha
    with Store.open(hosts.paths["ops"]) as store:
        assert fsck.fsck(store) == []


# -- the listing cache (mount/listing_cache.py) ----------------------------------------
def stat_all(directory: Path) -> None:
    for name in sorted(os.listdir(directory)):
        (directory / name).stat()


def fresh_view() -> None:
    """Make the kernel forget its cached names, so that lookups reach the mount."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="drops the kernel's caches (root)")
def test_own_changes_show_at_once_after_a_directory_was_fetched(hosts: Hosts) -> None:
    a = hosts.mount("a")
    directory = a / "r" / "W1"
    directory.mkdir(parents=True)
    for i in range(5):
        (directory / f"f{i}.txt").write_bytes(b"x" * i)
    fresh_view()
    stat_all(directory)  # read name by name: the listing is fetched and kept
    (directory / "new.txt").write_bytes(b"new")
    (directory / "f1.txt").unlink()
    (directory / "f2.txt").rename(directory / "g2.txt")
    (directory / "f3.txt").write_bytes(b"longer now")
    fresh_view()
    assert (directory / "new.txt").read_bytes() == b"new"
    assert not (directory / "f1.txt").exists()
    assert not (directory / "f2.txt").exists()
    assert (directory / "g2.txt").stat().st_size == 2
    assert (directory / "f3.txt").stat().st_size == len(b"longer now")
    assert sorted(os.listdir(directory)) == ["f0.txt", "f3.txt", "f4.txt", "g2.txt",
                                             "new.txt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="drops the kernel's caches (root)")
@pytest.mark.parametrize("notify", [True, False], ids=["notify", "no-notify"])
def test_another_hosts_changes_show_within_cache_timeout(hosts: Hosts, notify: bool) -> None:
    """b keeps a listing of the directory; a changes it; b's names follow."""
    a = hosts.mount("a")
    b = hosts.mount("b", *(() if notify else ("nonotify",)))
    (a / "r" / "W1").mkdir(parents=True)
    for i in range(5):
        (a / "r" / "W1" / f"f{i}.txt").write_bytes(b"x" * i)
    seen = b / "r" / "W1"
    deadline = time.monotonic() + CACHE_TIMEOUT + 1
    while not seen.exists() or len(os.listdir(seen)) < 5:
        assert time.monotonic() < deadline, "a's files never showed on b"
        time.sleep(0.02)
    fresh_view()
    stat_all(seen)
    (a / "r" / "W1" / "added.txt").write_bytes(b"added on a")
    (a / "r" / "W1" / "f0.txt").unlink()
    (a / "r" / "W1" / "f4.txt").write_bytes(b"rewritten on a")
    start = time.monotonic()
    while True:
        fresh_view()
        if ((seen / "added.txt").exists() and not (seen / "f0.txt").exists()
                and (seen / "f4.txt").stat().st_size == len(b"rewritten on a")):
            break
        assert time.monotonic() - start < CACHE_TIMEOUT + 1, "b kept a stale listing"
        time.sleep(0.05)
    assert (seen / "added.txt").read_bytes() == b"added on a"
    assert (seen / "f4.txt").read_bytes() == b"rewritten on a"
    if notify:
        assert time.monotonic() - start < CACHE_TIMEOUT, "the announcement was not heard"


@pytest.mark.skipif(os.geteuid() != 0, reason="drops the kernel's caches (root)")
@pytest.mark.parametrize("notify", [True, False], ids=["notify", "no-notify"])
def test_a_directory_this_host_fills_shows_every_name_it_holds(hosts: Hosts,
                                                                notify: bool) -> None:
    """a made W1 and answers new names in it without the catalog (filled_directories):
    every name a put there (written, renamed, linked) is still found once the kernel
    forgot it, and a name b adds shows on a within cache_timeout."""
    a = hosts.mount("a", *(() if notify else ("nonotify",)))
    b = hosts.mount("b")
    filled, other = a / "r" / "W1", a / "r" / "W2"
    filled.mkdir(parents=True)
    other.mkdir()
    for i in range(3):
        (filled / f"f{i}.txt").write_bytes(b"x" * (i + 1))
    (other / "moved.txt").write_bytes(b"moved in")
    (other / "moved.txt").rename(filled / "moved.txt")
    os.link(filled / "f0.txt", filled / "linked.txt")
    fresh_view()
    assert {p.name: p.stat().st_size for p in filled.iterdir()} == {
        "f0.txt": 1, "f1.txt": 2, "f2.txt": 3, "moved.txt": 8, "linked.txt": 1}
    fresh_view()
    assert [(filled / n).exists() for n in ("f1.txt", "moved.txt", "linked.txt", "no.txt")] \
        == [True, True, True, False]

    on_b = b / "r" / "W1"
    deadline = time.monotonic() + CACHE_TIMEOUT + 1
    while not on_b.exists():
        assert time.monotonic() < deadline, "W1 never showed on b"
        time.sleep(0.02)
    (on_b / "from-b.txt").write_bytes(b"written on b")
    start = time.monotonic()
    while not (filled / "from-b.txt").exists():
        assert time.monotonic() - start < CACHE_TIMEOUT + 1, "a never saw b's file"
        time.sleep(0.05)
    assert (filled / "from-b.txt").read_bytes() == b"written on b"
    if notify:
        assert time.monotonic() - start < CACHE_TIMEOUT, "the announcement was not heard"
