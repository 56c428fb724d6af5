"""Bulk loads (`-o durability=batch`): closes return before registration, rounds make them
durable, and a crash loses at most the closes since the last round, never leaving a
record on wrong or missing bytes, nor a wrong blob under cas/ (law 1).

A killed daemon loses only the closes whose registration was still under way (what
it wrote, the kernel keeps), so these tests also play the part of a crash of the
machine: every blob linked after the last round's moment is
emptied or overwritten before the store is opened again, the worst such a crash can
do (the catalog's commits since then are kept: the worse case for recovery).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs import bulk_load, fsck
from casfs.blobs.local import LocalBlobStore
from casfs.bulk_load import BulkLoad, Marker
from casfs.ingest import place_blob
from casfs.mount import closes_behind
from casfs.records import Document, NewDocument
from casfs.store import Store
from casfs.tools import cli

from .conftest import Mounter


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def lose_since(store_path: Path, moment: float) -> list[str]:
    """What a crash of the machine may do: every blob linked at or after `moment`
    comes back empty or full of the wrong bytes. Returns their hashes."""
    blobs = LocalBlobStore(store_path / "cas", store_path / "tmp")
    lost = sorted(blobs.placed_since(moment))
    for k, sha256 in enumerate(lost):
        path = blobs.path(sha256)
        size = path.stat().st_size
        path.chmod(0o644)
        with open(path, "r+b") as f:
            if k % 2:
                f.write(os.urandom(size))
            else:
                f.truncate(0)
        path.chmod(0o444)
    return lost


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` immutable for the block (which stops root too); the test is skipped
    where the filesystem has no such attribute."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is missing (e2fsprogs)")
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def crashed(marker_path: Path) -> None:
    """Make a marker look like its mount died (a pid nobody has now)."""
    data = json.loads(marker_path.read_text())
    Marker(marker_path, dead_pid(), data["boot"], data["durable_until"]).save()


def place_and_register(store: Store, name: str, data: bytes) -> Document:
    staging = store.blobs.stage()
    try:
        staging.write(data, 0)
        blob = place_blob(store.blobs, staging, durable=False)
        doc, _ = store.catalog.register(NewDocument(
            resolver="bulk", artifact_id="A1", basename=name, sha256=blob.sha256,
            bytes=blob.bytes, storage_uri=blob.storage_uri,
            source_url=f"https://example.org/{name}"), store.blobs.has)
    finally:
        staging.discard()
    return doc


def test_recovery_closes_what_a_crash_lost_and_keeps_what_a_round_made_durable(
        store_path: Path) -> None:
    with Store.open(store_path) as store:
        bulk = BulkLoad(store)
        store.catalog.relax_commits()
        before = {f"early{k}.bin": os.urandom(3000 + k) for k in range(20)}
        for name, data in before.items():
            place_and_register(store, name, data)
        durable_until = bulk.make_durable(store.catalog)
        time.sleep(bulk_load.MARGIN_S + 0.1)  # what follows is past the margin
        after = {f"late{k}.bin": os.urandom(5000 + k) for k in range(10)}
        late = [place_and_register(store, name, data) for name, data in after.items()]
        marker = bulk.marker.path
    crashed(marker)
    lost = lose_since(store_path, durable_until)
    assert len(lost) == len(after)
    with Store.open(store_path) as store:
        found = fsck.fsck(store)
        assert [p.kind for p in found if p.kind == "unfinished-bulk-load"] == \
            ["unfinished-bulk-load"], found
        for problem in found:
            if problem.kind == "unfinished-bulk-load":
                assert fsck.repair(store, problem)
        assert fsck.fsck(store) == []
        assert not marker.exists()
        live = {doc.basename: doc for doc in store.catalog.iter_live_documents()}
        assert sorted(live) == sorted(before)  # every late one was lost, no early one
        for name, data in before.items():
            assert live[name].sha256 == hashlib.sha256(data).hexdigest()
            fd = store.blobs.open_blob(live[name].sha256)
            try:
                assert os.pread(fd, len(data) + 1, 0) == data
            finally:
                os.close(fd)
        for sha256 in lost:  # law 1: nothing wrong is left under cas/
            assert not store.blobs.has(sha256)
            assert store.catalog.blob_state(sha256) == "quarantined"
        for doc in late:  # closed, with the reason, in their history
            assert store.catalog.history(doc.ino)[-1].change == bulk_load.LOST


def test_recovery_closes_a_record_whose_blob_file_a_crash_lost(store_path: Path) -> None:
    """The disk keeps no order between the catalog's log and a directory: a crash of
    the machine may keep a record committed after the last round and lose its blob's
    name. Recovery closes that record (law 2), with the reason, as for wrong bytes."""
    with Store.open(store_path) as store:
        bulk = BulkLoad(store)
        store.catalog.relax_commits()
        kept = place_and_register(store, "kept.bin", os.urandom(3000))
        bulk.make_durable(store.catalog)
        time.sleep(bulk_load.MARGIN_S + 0.1)
        lost = place_and_register(store, "lost.bin", os.urandom(4500))
        marker = bulk.marker.path
    crashed(marker)
    (store_path / "cas" / "sha256" / lost.sha256[:2] / lost.sha256[2:]).unlink()
    with Store.open(store_path) as store:
        assert sorted(p.kind for p in fsck.fsck(store)) == \
            ["missing-blob", "unfinished-bulk-load"]
        assert [r.lost for _, r in bulk_load.recover_all(store)] == [[lost.sha256]]
        assert fsck.fsck(store) == []
        live = {doc.basename for doc in store.catalog.iter_live_documents()}
        assert live == {kept.basename}  # its record closed, with the reason
        gone = store.catalog.last_at_path("bulk", "A1", "lost.bin")
        assert gone is not None and gone.change == bulk_load.LOST
        assert store.catalog.blob_state(lost.sha256) == "missing"


def test_a_mount_that_ended_cleanly_leaves_nothing_to_recover(mounter: Mounter) -> None:
    mnt = mounter.mount("durability=batch", "durability_interval=60")
    (mnt / "bulk" / "A1").mkdir(parents=True)
    data = os.urandom(10_000)
    (mnt / "bulk" / "A1" / "x.bin").write_bytes(data)
    marker = next((mounter.store_path / "run").glob("bulk-load-*.json"))
    with open(mnt / "bulk" / "A1" / "y.bin", "wb") as f:
        f.write(data[:500])
        f.flush()
        asked = time.time()
        os.fsync(f.fileno())  # waits for a round that started after it was asked
    assert json.loads(marker.read_text())["durable_until"] >= asked
    mounter.umount()
    assert not marker.exists()
    with Store.open(mounter.store_path) as store:
        assert fsck.fsck(store) == []


# Writes files bulk/A1/<prefix><i>.bin until killed; prints "ok <name> <sha256> <time>"
# once each close() returned.
WRITER = r"""
import hashlib, os, sys, time
root, prefix = sys.argv[1], sys.argv[2]
i = 0
while True:
    data = os.urandom(2048 + i % 5000)
    name = f"{prefix}{i:05d}.bin"
    with open(os.path.join(root, "bulk", "A1", name), "wb") as f:
        f.write(data)
    print("ok", name, hashlib.sha256(data).hexdigest(), repr(time.time()), flush=True)
    i += 1
"""


def write_for(mnt: Path, prefix: str, seconds: float, kill: Path | None = None
              ) -> list[tuple[str, str, float]]:
    """Run WRITER for `seconds`, then stop it (or SIGKILL the daemon of `kill`'s pid
    file, which ends it); (name, sha256, close time) of every close that returned."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), prefix],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(seconds)
    if kill is None:
        writer.terminate()
    else:
        os.kill(json.loads(kill.read_text())["pid"], signal.SIGKILL)
    out = writer.communicate(timeout=60)[0]
    lines = [line.split() for line in out.splitlines() if line.startswith("ok ")]
    return [(name, sha, float(at)) for _, name, sha, at in
            (fields for fields in lines if len(fields) == 4)]  # not a line cut short


def test_sigkill_in_a_bulk_load_loses_nothing_closed_before_the_last_round(
        mounter: Mounter) -> None:
    mnt = mounter.mount("durability=batch", "durability_interval=600")
    (mnt / "bulk" / "A1").mkdir(parents=True)
    early = write_for(mnt, "early", 1.0)
    with open(mnt / "bulk" / "A1" / "round.bin", "wb") as f:  # one round, by fsync
        f.write(b"round")
        f.flush()
        os.fsync(f.fileno())
    marker = next((mounter.store_path / "run").glob("bulk-load-*.json"))
    durable_until = json.loads(marker.read_text())["durable_until"]
    pidfile = next((mounter.store_path / "run").glob("mount-*.json"))
    late = write_for(mnt, "late", 1.0, kill=pidfile)  # the daemon dies under a writer
    assert json.loads(marker.read_text())["durable_until"] == durable_until
    assert len(early) >= 20 and len(late) >= 20, "too few closes to prove anything"
    assert all(at < durable_until for _, _, at in early)
    lost = lose_since(mounter.store_path, durable_until)
    # Each late close placed its blob, but for those whose registration was still
    # under way behind the close when the daemon died (closes_behind.py): no blob.
    assert len(late) - closes_behind.MAX_PENDING <= len(lost) <= len(late) + 1
    assert len(lost) >= 20, "too few blobs lost to prove anything"

    mnt = mounter.mount()  # recovers the bulk load first
    assert not marker.exists()
    for name, sha, _ in early:
        assert hashlib.sha256((mnt / "bulk" / "A1" / name).read_bytes()).hexdigest() == sha
    assert (mnt / "bulk" / "A1" / "round.bin").read_bytes() == b"round"
    shown = {p.name for p in (mnt / "bulk" / "A1").iterdir()}
    assert not shown & {name for name, _, _ in late}  # every late blob was lost
    with Store.open(mounter.store_path) as store:
        assert fsck.fsck(store) == []
        for doc in store.catalog.iter_live_documents():
            assert doc.sha256 not in lost
    verify = subprocess.run([sys.executable, "-m", "casfs.tools", "--store",
                             str(mounter.store_path), "verify"], capture_output=True)
    assert verify.returncode == 0, verify.stdout


@pytest.mark.parametrize("option, message", [
    ("durability=sometimes", "-o durability is close"),
    ("durability_interval=0", "-o durability_interval needs seconds"),
])
def test_bad_durability_options_are_refused(mounter: Mounter, option: str, message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--store", str(mounter.store_path), "mount", str(mounter.mountpoint),
                     "-o", option])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not os.path.ismount(mounter.mountpoint)


@pytest.mark.parametrize("backend", ["postgresql", "postgresql+s3"], indirect=True)
def test_a_bulk_load_needs_a_store_on_this_machine(mounter: Mounter,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """On shared storage another host's blobs still arriving would look lost to this
    host's recovery: refused, with the reason, and nothing is mounted or marked."""
    code = cli.main(["--store", str(mounter.store_path), "mount", str(mounter.mountpoint),
                     "-o", "durability=batch"])
    assert code == 2
    assert "needs a store whose catalog and blobs are on this machine" in \
        capsys.readouterr().err
    assert not os.path.ismount(mounter.mountpoint)
    assert not list((mounter.store_path / "run").glob("bulk-load-*.json"))


def test_a_command_that_writes_recovers_first_and_fsck_reports_it(
        store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a crash, `casfs put` of bytes a crash damaged must not take the damaged
    blob for a dedup hit: it recovers first (and says so); fsck, which does not,
    names the unfinished bulk load."""
    data = os.urandom(4000)
    with Store.open(store_path) as store:
        bulk = BulkLoad(store)
        store.catalog.relax_commits()
        durable_until = bulk.make_durable(store.catalog)
        time.sleep(bulk_load.MARGIN_S + 0.1)
        place_and_register(store, "late.bin", data)
        marker = bulk.marker.path
    crashed(marker)
    assert len(lose_since(store_path, durable_until)) == 1
    assert cli.main(["--store", str(store_path), "fsck"]) == 1
    assert "unfinished-bulk-load" in capsys.readouterr().out
    source = tmp_path / "again.bin"
    source.write_bytes(data)
    assert cli.main(["--store", str(store_path), "put", "--resolver", "bulk", "--artifact",
                     "A2", str(source)]) == 0
    assert "recovered a bulk load that ended without its last round: 1 blob(s) checked, 1 lost" in \
        capsys.readouterr().err
    with Store.open(store_path) as store:
        assert fsck.fsck(store) == []
        fd = store.blobs.open_blob(hashlib.sha256(data).hexdigest())
        try:
            assert os.pread(fd, len(data) + 1, 0) == data  # stored anew, whole
        finally:
            os.close(fd)


def test_a_failed_round_fails_the_fsync_and_the_mount_goes_on(mounter: Mounter) -> None:
    """A round that cannot write its marker (an immutable run/, which stops root too)
    fails the fsync waiting for it with an error, leaves the mount up, and the next
    round, once it can, succeeds."""
    mnt = mounter.mount("durability=batch", "durability_interval=600")
    (mnt / "bulk" / "A1").mkdir(parents=True)
    run_dir = mounter.store_path / "run"
    with immutable(run_dir), open(mnt / "bulk" / "A1" / "a.bin", "wb") as f:
        f.write(b"a")
        f.flush()
        with pytest.raises(OSError) as failed:
            os.fsync(f.fileno())
        assert failed.value.errno == errno.EIO
    assert (mnt / "bulk" / "A1" / "a.bin").read_bytes() == b"a"  # registered, mount up
    with open(mnt / "bulk" / "A1" / "b.bin", "wb") as f:
        f.write(b"b")
        f.flush()
        asked = time.time()
        os.fsync(f.fileno())
    marker = next(run_dir.glob("bulk-load-*.json"))
    assert json.loads(marker.read_text())["durable_until"] >= asked


def test_what_follows_a_close_applies_to_what_the_close_registers(mounter: Mounter) -> None:
    """A bulk load answers a close before the file is registered (closes_behind.py).
    What a pipeline does right after it (read it back, `mv x.part x.pdf`, `rm`, `touch
    -d`, set an attribute, write it again) must act on the registered file, and an
    fsync must cover every close before it; then an unmount must register the rest."""
    mnt = mounter.mount("durability=batch", "durability_interval=600")
    directory = mnt / "bulk" / "A1"
    directory.mkdir(parents=True)
    expected: dict[str, tuple[bytes, int | None, str | None]] = {}
    for k in range(60):
        data = os.urandom(2048 + k)
        part = directory / f"f{k:03d}.part"
        part.write_bytes(data)
        kind = k % 6
        if kind == 0:
            assert part.read_bytes() == data
            expected[part.name] = (data, None, None)
        elif kind == 1:
            part.rename(directory / f"f{k:03d}.pdf")
            expected[f"f{k:03d}.pdf"] = (data, None, None)
        elif kind == 2:
            part.unlink()
        elif kind == 3:
            os.utime(part, ns=(1_600_000_000_000_000_000 + k, 1_600_000_000_000_000_000 + k))
            expected[part.name] = (data, 1_600_000_000_000_000_000 + k, None)
        elif kind == 4:
            url = f"https://example.org/{k}"
            os.setxattr(part, "user.casfs.source_url", url.encode())
            expected[part.name] = (data, None, url)
        else:
            with open(part, "ab") as f:
                f.write(b"more")
            expected[part.name] = (data + b"more", None, None)
    with open(directory / "last.bin", "wb") as f:  # an fsync covers every close before it
        f.write(b"last")
        f.flush()
        os.fsync(f.fileno())
    expected["last.bin"] = (b"last", None, None)
    with Store.open(mounter.store_path, readonly=True) as store:
        live = {doc.basename: doc for doc in store.catalog.iter_live_documents()}
    assert sorted(live) == sorted(expected)
    for name, (data, mtime_ns, url) in expected.items():
        doc = live[name]
        assert doc.sha256 == hashlib.sha256(data).hexdigest(), name
        assert (directory / name).read_bytes() == data
        if mtime_ns is not None:
            assert doc.mtime_ns == mtime_ns and (directory / name).stat().st_mtime_ns == mtime_ns
        if url is not None:
            assert doc.source_url == url

    burst = {f"burst{k:03d}.bin": os.urandom(3000) for k in range(200)}
    for name, data in burst.items():
        (directory / name).write_bytes(data)
    mounter.umount()  # registers what is still behind its close
    with Store.open(mounter.store_path, readonly=True) as store:
        live = {doc.basename: doc for doc in store.catalog.iter_live_documents()}
        assert fsck.fsck(store) == []
    for name, data in burst.items():
        assert live[name].sha256 == hashlib.sha256(data).hexdigest()


def test_a_registration_failing_after_its_close_is_logged_and_fails_the_next_fsync(
        mounter: Mounter) -> None:
    """The close was answered already: its failure goes to the log, with the name, and
    to the next fsync of each descriptor open then (EIO, once each), as a failed
    writeback does."""
    mnt = mounter.mount("durability=batch", "durability_interval=600")
    (mnt / "bulk" / "A1").mkdir(parents=True)
    blobs = mounter.store_path / "cas" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    log = mounter.store_path / "log" / "mount.log"
    (mnt / "bulk" / "A2").mkdir()
    with open(mnt / "bulk" / "A2" / "open.bin", "wb") as f:  # registered by its fsync
        f.write(b"open")
        f.flush()
        os.fsync(f.fileno())
    # Open while it fails (read-only: chattr's fork closes a copy of it, and the
    # close of a copy of a written one would be a close of its own).
    open_before = os.open(mnt / "bulk" / "A2" / "open.bin", os.O_RDONLY)
    try:
        with immutable(blobs):  # no blob can be placed: its fan-out cannot be made
            (mnt / "bulk" / "A1" / "lost.bin").write_bytes(b"never registered")
            deadline = time.monotonic() + 20
            while "after its close had returned" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.05)
        assert "'lost.bin'" in log.read_text()
        with open(mnt / "bulk" / "A1" / "next.bin", "wb") as f:
            f.write(b"next")
            f.flush()
            with pytest.raises(OSError) as failed:
                os.fsync(f.fileno())
            assert failed.value.errno == errno.EIO
            os.fsync(f.fileno())  # reported once
        # Every descriptor open when it failed hears of it once (Linux's errseq);
        # one opened after an fsync reported it does not.
        with pytest.raises(OSError) as failed:
            os.fsync(open_before)
        assert failed.value.errno == errno.EIO
        os.fsync(open_before)
    finally:
        os.close(open_before)
    with open(mnt / "bulk" / "A2" / "after.bin", "wb") as f:
        f.write(b"after")
        f.flush()
        os.fsync(f.fileno())
    assert (mnt / "bulk" / "A1" / "next.bin").read_bytes() == b"next"
    assert sorted(p.name for p in (mnt / "bulk" / "A1").iterdir()) == ["next.bin"]
    metrics = (mnt / ".casfs" / "metrics").read_text()
    assert "casfs_mount_registrations_failed_after_close 1" in metrics
    assert "casfs_mount_closes_answered_early 1" in metrics  # next.bin: by its fsync
    assert "casfs_mount_registrations_pending 0" in metrics
    mounter.umount()
    assert "1 file(s) closed in this bulk load could not be registered" in log.read_text()


def test_fsyncs_that_share_a_durability_round_all_succeed(mounter: Mounter) -> None:
    """Several writers' fsyncs that wait for the same round each get its answer
    (an answer is read once: each waiter has its own)."""
    mnt = mounter.mount("durability=batch", "durability_interval=600")
    (mnt / "bulk" / "A1").mkdir(parents=True)
    errors: list[BaseException] = []

    def write_and_fsync(k: int) -> None:
        try:
            for i in range(20):
                with open(mnt / "bulk" / "A1" / f"w{k}-{i}.bin", "wb") as f:
                    f.write(os.urandom(1000))
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException as e:
            errors.append(e)
    threads = [threading.Thread(target=write_and_fsync, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
