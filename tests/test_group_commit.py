"""Group commit: closes that arrive together share one catalog transaction, each
close still gets its own answer, and each returns only once its file is durable and
registered (law 6; the crash test kills the daemon in the middle of such rounds)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import outcome
import pytest
import trio

from casfs.blobs.staging import StagingFile
from casfs.ingest import StoredBlob, place_blob
from casfs.mount.catalog_writer import CatalogWriter, Registration, ToPlace, register_together
from casfs.records import NewDocument, PathWrite
from casfs.store import Store

from .conftest import BOTH_CATALOGS, Mounter

pytestmark = BOTH_CATALOGS


def test_a_registration_that_fails_in_a_round_fails_alone(store: Store) -> None:
    """One file of a round whose blob was lost (and cannot be put back) fails; the
    others of the round are registered, each with its own answer."""
    catalog, blobs = store.catalog, store.blobs
    directory = catalog.ensure_directory("unpaywall", "W1")
    registrations = []
    for name in ("a.pdf", "lost.pdf", "b.pdf"):
        staging = blobs.stage()
        staging.write(name.encode() * 100, 0)
        blob = place_blob(blobs, staging)
        write = PathWrite(catalog.reserve_inos().start, directory, name, NewDocument(
            resolver="unpaywall", artifact_id="W1", basename=name, sha256=blob.sha256,
            bytes=blob.bytes, storage_uri=blob.storage_uri))
        registrations.append((write, staging))
    lost = registrations[1]
    lost[1].discard()  # its bytes are gone for good ...
    blobs.path(lost[0].new.sha256).unlink()  # ... and so is its blob
    try:
        answers = register_together(catalog, blobs, registrations)
    finally:
        for _, staging in registrations:
            staging.discard()
    assert isinstance(answers[0], outcome.Value) and isinstance(answers[2], outcome.Value)
    assert isinstance(answers[1], outcome.Error)
    assert {d.basename for d in catalog.list_documents(directory, 0, 10)} == {"a.pdf", "b.pdf"}


def test_writers_closing_at_once_share_commits_and_lose_nothing(mounter: Mounter) -> None:
    mnt = mounter.mount()
    writers, files = 8, 40
    written: dict[Path, str] = {}
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            directory = mnt / "group" / f"W{k}"
            directory.mkdir(parents=True)
            for i in range(files):
                data = os.urandom(2048) if i % 4 else b"the same bytes %d" % (i % 3)
                (directory / f"f{i}.bin").write_bytes(data)
                written[directory / f"f{i}.bin"] = hashlib.sha256(data).hexdigest()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    metrics = (mnt / ".casfs" / "metrics").read_text()
    registrations = _sample(metrics, "casfs_mount_registrations")
    commits = _sample(metrics, "casfs_mount_registration_commits")
    assert registrations == writers * files
    assert commits < registrations, "no two closes shared a commit"
    assert 0 < _sample(metrics, "casfs_mount_registration_seconds") < 600
    mounter.remount()
    for path, sha in written.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path
    with Store.open(mounter.store_path) as store:
        assert store.catalog.stats()["documents"] == writers * files


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    pytest.fail(f"{name} not in metrics:\n{text}")


def _closes(store: Store, directory_name: str, contents: list[bytes]
            ) -> tuple[list[Registration], list[int]]:
    """A round of closed files whose blobs the round places (as the mount's closes
    on local blobs are), each at a new name."""
    catalog = store.catalog
    directory = catalog.ensure_directory("unpaywall", directory_name)
    registrations: list[Registration] = []
    inos = []
    for k, data in enumerate(contents):
        staging = _staged(store, data)
        ino, name = catalog.reserve_inos().start, f"f{k}.bin"

        def write_of(blob: StoredBlob, ino: int = ino, name: str = name) -> PathWrite:
            return PathWrite(ino, directory, name, NewDocument(
                resolver="unpaywall", artifact_id=directory_name, basename=name,
                sha256=blob.sha256, bytes=blob.bytes, storage_uri=blob.storage_uri,
                dedup_hit=blob.dedup_hit))
        registrations.append((ToPlace(write_of, durable=True), staging))
        inos.append(ino)
    return registrations, inos


def _dedup_hits(store: Store) -> int:
    return sum(v for name, _, v in store.catalog.counters() if name == "casfs_dedup_hits_total")


@pytest.mark.parametrize("misguided", [False, True], ids=["as-expected", "placed-otherwise"])
def test_a_round_placing_its_blobs_registers_each_once_and_counts_exactly(
        store: Store, misguided: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round whose blobs are placed in it: new blobs, a blob already stored, and two
    files with the same bytes. On a catalog server the blobs are placed while the
    statement runs; when the placing finds a blob otherwise than was read before it
    (here: the first look says absent for a stored blob, as when another host
    placed it meanwhile), the transaction is rolled back and the round made as
    before. Either way every file is registered once, every blob is in place, and
    the dedup hits are counted exactly."""
    stored = place_blob(store.blobs, _staged(store, b"already here"))
    if misguided:  # the first look at the stored blob finds it absent
        has, lied = type(store.blobs).has, []

        def looked(self: object, sha256: str) -> bool:
            if sha256 == stored.sha256 and not lied:
                lied.append(sha256)
                return False
            return has(self, sha256)  # type: ignore[arg-type]
        monkeypatch.setattr(type(store.blobs), "has", looked)
    writer = CatalogWriter(store)
    try:
        before = _dedup_hits(store)
        contents = [b"new one", b"already here", b"twice", b"twice", b"new two"]
        registrations, inos = _closes(store, "W1", contents)
        answers = writer._register_round(writer.catalog, registrations)
        monkeypatch.undo()
        documents = [answer.unwrap() for answer in answers]
        assert [d.ino for d in documents] == inos
        assert [d.sha256 for d in documents] == [hashlib.sha256(c).hexdigest() for c in contents]
        assert stored.sha256 == documents[1].sha256
        assert all(store.blobs.has(d.sha256) for d in documents)
        assert _dedup_hits(store) - before == 2  # "already here" and the second "twice"
        directory = store.catalog.ensure_directory("unpaywall", "W1")
        assert len(store.catalog.list_documents(directory, 0, 10)) == 5
    finally:
        for _, staging in registrations:
            staging.discard()
        writer.close()


def test_a_round_whose_placing_fails_answers_that_close_alone(store: Store) -> None:
    """One blob of the round cannot be placed (its staged bytes are gone): that close
    gets the error, the others are registered, and nothing points to a missing blob."""
    writer = CatalogWriter(store)
    registrations, inos = _closes(store, "W1", [b"one", b"broken", b"three"])
    registrations[1][1].discard()
    try:
        answers = writer._register_round(writer.catalog, registrations)
        assert isinstance(answers[1], outcome.Error)
        kept = [answers[0].unwrap(), answers[2].unwrap()]
        assert [d.ino for d in kept] == [inos[0], inos[2]]
        assert all(store.blobs.has(d.sha256) for d in kept)
        directory = store.catalog.ensure_directory("unpaywall", "W1")
        assert {d.basename for d in store.catalog.list_documents(directory, 0, 10)} == {
            "f0.bin", "f2.bin"}
    finally:
        for _, staging in registrations:
            staging.discard()
        writer.close()


def _staged(store: Store, data: bytes) -> StagingFile:
    staging = store.blobs.stage()
    staging.write(data, 0)
    return staging


def test_creates_take_inode_numbers_reserved_ahead_while_the_writer_is_busy(
        store: Store) -> None:
    """A create takes its inode number from a block the writer reserved ahead, so it
    does not wait for the writer's connection, which rounds may hold for a while
    (a bulk load's gather): here a job holds it for 10 s, and 300 creates' numbers
    come at once. Every number handed out is new."""
    writer = CatalogWriter(store)
    release = threading.Event()

    async def main() -> set[int]:
        seen = {await writer.new_ino() for _ in range(201)}  # past half of a block
        with trio.fail_after(10):
            while not writer._next_inos:  # the reservation ahead, on its way
                await trio.sleep(0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, lambda catalog: release.wait(10))
            await trio.sleep(0.1)  # the job holds the connection now
            with trio.fail_after(2):
                seen |= {await writer.new_ino() for _ in range(300)}
            release.set()
        return seen

    try:
        seen = trio.run(main)
    finally:
        release.set()
        writer.close()
    assert len(seen) == 501
    taken = store.catalog.reserve_inos()  # what the catalog hands out next is newer
    assert min(taken) > max(seen)
