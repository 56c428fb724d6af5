"""fsck and gc on a store whose blobs are in S3: the bucket compared with the blob
ledger, orphans collected, and a failed listing never taken for a whole one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs import fsck, gc
from casfs.ingest import ingest_file
from casfs.records import GcPolicy
from casfs.store import Store

from .s3 import S3Server


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_an_object_that_was_never_registered_is_found_and_adopted(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adopted into the ledger, an object no record uses is garbage: gc removes it once
    its grace period is over."""
    monkeypatch.setattr(fsck, "STRAY_GRACE", 0.0)
    with Store.open(store_path) as store:
        staging = store.blobs.stage()
        try:
            staging.write(b"uploaded, then the writer died", 0)
            sha, _, _ = store.blobs.place(staging)  # never registered
        finally:
            staging.discard()
        problems = fsck.fsck(store)
        assert [(p.kind, p.sha256) for p in problems] == [("stray-object", sha)]
        assert problems[0].path == store.blobs.uri(sha)
        assert fsck.repair(store, problems[0])
        assert store.catalog.blob_state(sha) == "present"
        assert fsck.fsck(store) == []
        assert [g.sha256 for page in gc.find_garbage(store, GcPolicy(0, 0, ()))
                for g in page] == [sha]


def _upload_unregistered(store: Store, data: bytes) -> str:
    staging = store.blobs.stage()
    try:
        staging.write(data, 0)
        sha, _, _ = store.blobs.place(staging)
    finally:
        staging.discard()
    return sha


def _garbage_of_a_deleted_document(store: Store, tmp_path: Path, data: bytes) -> str:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    ingest_file(store, src, resolver="r", artifact_id="W1", source_url="https://x/1",
                name="gone.bin")
    doc = store.catalog.resolve_path("/r/W1/gone.bin")
    assert doc is not None
    store.catalog.unlink_document(doc.ino)
    return doc.sha256


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_gc_deletes_exactly_the_garbage_and_the_orphans_past_their_grace(
        store_path: Path, tmp_path: Path) -> None:
    with Store.open(store_path) as store:
        kept = _upload_unregistered(store, b"a writer died after this upload")
        garbage = _garbage_of_a_deleted_document(store, tmp_path, b"deleted document")
        src = tmp_path / "live.bin"
        src.write_bytes(b"a live document")
        live = ingest_file(store, src, resolver="r", artifact_id="W1",
                           source_url="https://x/2", name="live.bin").document.sha256
        # Within its grace an orphan may be an upload whose registration is coming.
        report = gc.collect(store, GcPolicy(3600, 0, ()), apply=True)
        assert (report.removed, store.blobs.has(kept)) == (0, True)
        time.sleep(1.1)  # object times have whole seconds
        listed: list[gc.Garbage] = []
        preview = gc.collect(store, GcPolicy(0, 0, ()), apply=False, on_blob=listed.append)
        assert sorted((g.sha256, g.orphan) for g in listed) == sorted(
            [(kept, True), (garbage, False)])
        assert (preview.removed, store.blobs.has(kept), store.blobs.has(garbage)) == (
            0, True, True)
        report = gc.collect(store, GcPolicy(0, 0, ()), apply=True)
        assert report.removed == 2
        assert not store.blobs.has(kept) and not store.blobs.has(garbage)
        assert store.blobs.has(live)
        assert sorted(sha for sha, _, _ in store.blobs.list_blobs()) == [live]
        assert fsck.fsck(store) == []


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_a_listing_error_stops_gc_with_nothing_deleted(
        store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bucket listing breaks after its first page: gc must not take what it saw
    for the whole bucket, nor delete the catalog's garbage and stop halfway."""
    with Store.open(store_path) as store:
        orphans = [_upload_unregistered(store, f"orphan {i}".encode()) for i in range(3)]
        garbage = _garbage_of_a_deleted_document(store, tmp_path, b"deleted document")
        time.sleep(1.1)
        whole = store.blobs.list_blobs

        def breaking() -> Iterator[tuple[str, int, float]]:
            for count, item in enumerate(whole()):
                if count == 1:
                    raise OSError("object store: listing failed: connection reset")
                yield item

        monkeypatch.setattr(store.blobs, "list_blobs", breaking)
        with pytest.raises(OSError, match="listing failed"):
            gc.collect(store, GcPolicy(0, 0, ()), apply=True)
        assert all(store.blobs.has(sha) for sha in [*orphans, garbage])
        assert store.catalog.blob_state(garbage) == "present"
        monkeypatch.undo()
        assert gc.collect(store, GcPolicy(0, 0, ()), apply=True).removed == 4


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_gc_says_so_and_exits_nonzero_when_the_listing_fails(
        store_path: Path, s3_server: S3Server) -> None:
    """The object store stopped: gc names the failure, exits 2, deletes nothing."""
    with Store.open(store_path) as store:
        orphan = _upload_unregistered(store, b"an orphan")
    s3_server.pause()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "casfs.tools", "--store", str(store_path), "gc",
             "--grace", "0", "--keep-history", "0", "--apply"],
            capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "CASFS_S3_TIMEOUT": "2"})
    finally:
        s3_server.resume()
    assert result.returncode == 2, result.stderr
    assert "listing" in result.stderr
    with Store.open(store_path) as store:
        assert store.blobs.has(orphan)
