"""A durable mount's rounds link first and sync once (casfs.link_first): every close
is still durable when it returns, and what a crash of the machine may leave between
a round's links and its sync (a name on empty or wrong bytes, no record on it) is
checked before the store is used again (law 1); a mount that died alone needs no
check. Played here as `test_bulk_load.py` plays a crash of the machine: the bytes
such a crash may lose are damaged by hand, and the marker given another boot.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import outcome
import pytest

from casfs import bulk_load, fsck
from casfs.blobs import local as local_module
from casfs.blobs.local import LocalBlobStore
from casfs.blobs.staging import StagingFile
from casfs.bulk_load import Marker
from casfs.ingest import StoredBlob, place_blob, place_blobs
from casfs.link_first import LinkFirst
from casfs.mount.catalog_writer import CatalogWriter, Registration
from casfs.processes import pid_alive
from casfs.records import NewDocument
from casfs.store import Store
from casfs.tools import cli

from .conftest import BOTH_CATALOGS, Mounter
from .test_bulk_load import dead_pid
from .test_group_commit import _closes


def markers(store_path: Path) -> list[Path]:
    return sorted((store_path / "run").glob(f"{bulk_load.LINK_FIRST}*.json"))


def machine_went_down(marker: Path) -> None:
    """Make a marker look like its mount went down with its machine (another boot)."""
    data = json.loads(marker.read_text())
    Marker(marker, dead_pid(), "another-boot", data["durable_until"]).save()


def staged(store: Store, data: bytes) -> StagingFile:
    staging = store.blobs.stage()
    staging.write(data, 0)
    return staging


def a_round(store: Store, link_first: LinkFirst, datas: list[bytes]) -> list[StoredBlob]:
    """What a mount's round does before its commit: link first, sync once."""
    stagings = [store.blobs.stage() for _ in datas]
    try:
        for staging, data in zip(stagings, datas, strict=True):
            staging.write(data, 0)
        started = time.time()
        placed = place_blobs(store.blobs, stagings, link_first=True)
        link_first.placed(started, ok=True)
    finally:
        for staging in stagings:
            staging.discard()
    assert all(isinstance(blob, StoredBlob) for blob in placed)
    return [blob for blob in placed if isinstance(blob, StoredBlob)]


def register(store: Store, name: str, blob: StoredBlob) -> None:
    store.catalog.register(NewDocument(
        resolver="web", artifact_id="A1", basename=name, sha256=blob.sha256,
        bytes=blob.bytes, storage_uri=blob.storage_uri,
        source_url=f"https://example.org/{name}"), store.blobs.has)


def test_a_durable_mount_keeps_a_marker_while_it_runs_and_drops_it_at_unmount(
        mounter: Mounter) -> None:
    mnt = mounter.mount()
    (found,) = markers(mounter.store_path)
    pidfile = next((mounter.store_path / "run").glob("mount-*.json"))
    assert json.loads(found.read_text())["pid"] == json.loads(pidfile.read_text())["pid"]
    (mnt / "web" / "A1").mkdir(parents=True)
    data = os.urandom(5000)
    (mnt / "web" / "A1" / "x.bin").write_bytes(data)
    mounter.umount()
    assert markers(mounter.store_path) == []
    mnt = mounter.mount("ro")
    assert (mnt / "web" / "A1" / "x.bin").read_bytes() == data
    assert markers(mounter.store_path) == []  # a read-only mount links nothing


@BOTH_CATALOGS
def test_only_a_store_on_this_machine_links_first(mounter: Mounter, backend: str) -> None:
    """On a catalog server (shared storage) another host's blobs in flight would look
    lost to this one's recovery: rounds there sync before they link, as before."""
    mnt = mounter.mount()
    (mnt / "web" / "A1").mkdir(parents=True)
    (mnt / "web" / "A1" / "x.bin").write_bytes(b"x" * 3000)
    assert len(markers(mounter.store_path)) == (1 if backend == "sqlite" else 0)


def test_a_mount_that_died_alone_needs_no_check(mounter: Mounter) -> None:
    """SIGKILL of the daemon: the kernel keeps what it linked. fsck finds nothing to
    report, and the next mount syncs and drops the dead mount's marker."""
    mnt = mounter.mount()
    (mnt / "web" / "A1").mkdir(parents=True)
    datas = {f"f{k}.bin": os.urandom(2000 + k) for k in range(30)}
    for name, data in datas.items():
        (mnt / "web" / "A1" / name).write_bytes(data)
    pidfile = next((mounter.store_path / "run").glob("mount-*.json"))
    pid = json.loads(pidfile.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the daemon did not die"
        time.sleep(0.05)
    (left,) = markers(mounter.store_path)
    with Store.open(mounter.store_path) as store:
        assert fsck.fsck(store) == []
    mounter.cleanup()
    mnt = mounter.mount()
    assert [p for p in markers(mounter.store_path) if p != left] != []
    assert not left.exists()
    for name, data in datas.items():
        assert (mnt / "web" / "A1" / name).read_bytes() == data


def test_after_the_machine_went_down_what_was_linked_since_the_marker_is_checked(
        store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rounds registered before the crash keep their files. A round that had linked
    its blobs but not synced them (its closes never returned) may have left a name
    on empty bytes: fsck names the crashed mount, and the next command that writes
    checks first, so that the same bytes stored again are stored whole, not taken
    for a dedup hit of the damaged blob."""
    committed = [os.urandom(3000 + k) for k in range(5)]
    in_flight = os.urandom(4000)
    with Store.open(store_path) as store:
        blobs = bulk_load.local_blobs(store)
        assert isinstance(blobs, LocalBlobStore)
        link_first = LinkFirst(store, blobs)
        for k, blob in enumerate(a_round(store, link_first, committed)):
            register(store, f"c{k}.bin", blob)
        link_first.advance()
        durable_until = link_first.marker.durable_until
        time.sleep(bulk_load.MARGIN_S + 0.1)  # what follows is past the margin
        stagings = [store.blobs.stage()]
        stagings[0].write(in_flight, 0)
        store.blobs.place_batch(stagings, patient=False, link_first=True)  # no sync yet
        stagings[0].discard()
        marker = link_first.marker.path
    assert json.loads(marker.read_text())["durable_until"] == durable_until
    machine_went_down(marker)
    damaged = store_path / "cas" / "sha256" / hashlib.sha256(in_flight).hexdigest()[:2]
    blob_file = damaged / hashlib.sha256(in_flight).hexdigest()[2:]
    blob_file.chmod(0o644)
    blob_file.write_bytes(b"")  # what the machine's crash left of it
    blob_file.chmod(0o444)
    with Store.open(store_path) as store:
        assert [p.kind for p in fsck.fsck(store)] == ["unsynced-links"]
    source = tmp_path / "again.bin"
    source.write_bytes(in_flight)
    assert cli.main(["--store", str(store_path), "put", "--resolver", "web", "--artifact",
                     "A2", str(source)]) == 0
    assert "recovered a mount whose machine went down: " in capsys.readouterr().err
    assert not marker.exists()
    with Store.open(store_path) as store:
        assert fsck.fsck(store) == []
        live = {doc.basename: doc for doc in store.catalog.iter_live_documents()}
        for k, data in enumerate(committed):
            assert live[f"c{k}.bin"].sha256 == hashlib.sha256(data).hexdigest()
        assert blob_file.read_bytes() == in_flight  # stored anew, whole


def test_the_marker_moves_with_the_rounds_until_one_fails_and_then_stays(
        store_path: Path) -> None:
    """The marker moves forward to the last round whose links were synced. After a
    round whose placing failed, its links may never reach the disk: the marker moves
    no more, and stays at unmount, so that a crash of the machine any time later
    still has them checked."""
    with Store.open(store_path) as store:
        blobs = bulk_load.local_blobs(store)
        assert isinstance(blobs, LocalBlobStore)
        link_first = LinkFirst(store, blobs)
        path, before = link_first.marker.path, link_first.marker.durable_until
        a_round(store, link_first, [os.urandom(100)])
        link_first.advance()
        moved = json.loads(path.read_text())["durable_until"]
        assert moved > before
        link_first.placed(time.time(), ok=False)
        a_round(store, link_first, [os.urandom(100)])
        link_first.advance()
        assert json.loads(path.read_text())["durable_until"] == moved
        link_first.finish()
        assert path.exists()
        path.unlink()
        link_first = LinkFirst(store, blobs)  # a mount whose rounds all went well
        a_round(store, link_first, [os.urandom(100)])
        link_first.finish()
        assert not link_first.marker.path.exists()


def linked_first(store: Store, way: str, monkeypatch: pytest.MonkeyPatch) -> CatalogWriter:
    """A writer whose rounds link first (a durable mount of a store on this machine),
    then sync with one syncfs ("syncfs") or, while others' writes wait, with an
    fsync of each blob and directory ("fsync-each"): both ways forced here."""
    monkeypatch.setattr(local_module, "little_else_to_write", lambda *_: way == "syncfs")
    writer = CatalogWriter(store)
    blobs = bulk_load.local_blobs(store)
    assert blobs is not None
    writer.link_first = LinkFirst(store, blobs)
    return writer


def finished(writer: CatalogWriter, registrations: list[Registration]) -> None:
    for _, staging in registrations:
        staging.discard()
    assert writer.link_first is not None
    writer.link_first.finish()
    writer.close()


@pytest.mark.parametrize("way", ["syncfs", "fsync-each"])
def test_a_round_linked_first_registers_each_once_and_answers_each_on_its_own(
        store: Store, way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """New blobs, one already stored, the same bytes twice and one whose staged bytes
    are gone: that close gets its error, every other is registered once, its blob
    in place with its bytes, and the marker moves on."""
    stored = place_blob(store.blobs, staged(store, b"already here"))
    writer = linked_first(store, way, monkeypatch)
    contents = [b"new one", b"already here", b"twice", b"twice", b"gone", b"new two"]
    registrations, inos = _closes(store, "W1", contents)
    registrations[4][1].discard()
    try:
        answers = writer._register_round(writer.catalog, registrations)
        assert isinstance(answers[4], outcome.Error)
        kept = [answer.unwrap() for k, answer in enumerate(answers) if k != 4]
        assert [d.ino for d in kept] == inos[:4] + inos[5:]
        assert kept[1].sha256 == stored.sha256
        for doc, data in zip(kept, contents[:4] + contents[5:], strict=True):
            fd = store.blobs.open_blob(doc.sha256)
            try:
                assert os.pread(fd, 100, 0) == data
            finally:
                os.close(fd)
        directory = store.catalog.ensure_directory("unpaywall", "W1")
        assert len(store.catalog.list_documents(directory, 0, 10)) == 5
        assert writer.link_first is not None and not writer.link_first.stuck
    finally:
        finished(writer, registrations)


def test_a_round_whose_sync_fails_registers_nothing_and_stops_the_marker(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round whose blobs are linked but cannot be synced (the disk fails): every
    close gets the error and nothing of the round is registered (law 6), and the
    marker stops where it was, so that after a crash of the machine everything
    linked since is checked."""
    writer = linked_first(store, "syncfs", monkeypatch)
    assert writer.link_first is not None
    marker = writer.link_first.marker
    registrations, _ = _closes(store, "W1", [b"one", b"two"])

    def failing(*_: object) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(local_module, "_syncfs", failing)
    monkeypatch.setattr(local_module, "_fsync", failing)
    try:
        answers = writer._register_round(writer.catalog, registrations)
        for answer in answers:
            with pytest.raises(OSError) as failed:
                answer.unwrap()
            assert failed.value.errno == errno.EIO
        monkeypatch.undo()
        directory = store.catalog.ensure_directory("unpaywall", "W1")
        assert store.catalog.list_documents(directory, 0, 10) == []
        assert writer.link_first.stuck
        writer.link_first.advance()
        assert json.loads(marker.path.read_text())["durable_until"] == marker.durable_until
    finally:
        finished(writer, registrations)
    assert marker.path.exists()  # kept at the end: a crash recovery checks
    marker.path.unlink()
