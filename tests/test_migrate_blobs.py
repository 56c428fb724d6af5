"""`casfs migrate --blobs s3://...`: a store's local blobs move into a bucket; every
document reads the same bytes through the mount afterwards; a move killed halfway
and run again completes; damaged or missing local blobs stop the switch."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from casfs import fsck
from casfs.records import NewDocument
from casfs.store import Locations, Store

from .conftest import Mounter
from .postgres import PostgresServer
from .s3 import S3Server

BLOBS = int(os.environ.get("CASFS_MIGRATE_BLOBS", "10000"))
PER_BATCH = 500


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False, timeout=900)


def content(i: int) -> bytes:
    return f"document {i}\n".encode() * (1 + i % 40)


def fill(store_path: Path, count: int) -> dict[str, str]:
    """`count` documents with bytes of their own; {virtual path: sha256}."""
    expected: dict[str, str] = {}
    with Store.open(store_path) as store:
        for start in range(0, count, PER_BATCH):
            stagings = []
            for i in range(start, min(count, start + PER_BATCH)):
                staging = store.blobs.stage()
                staging.write(content(i), 0)
                stagings.append(staging)
            try:
                placed = store.blobs.place_batch(stagings)
            finally:
                for staging in stagings:
                    staging.discard()
            batch = []
            for offset, (sha, size, _) in enumerate(placed):
                i = start + offset
                artifact, name = f"W{i // 10:05d}", f"d{i % 10}.txt"
                batch.append(NewDocument(resolver="r", artifact_id=artifact, basename=name,
                                         sha256=sha, bytes=size, storage_uri=store.blobs.uri(sha),
                                         source_url=f"https://x/{i}"))
                expected[f"/r/{artifact}/{name}"] = sha
            store.catalog.register_many(batch)
    return expected


def objects(url: str) -> int:
    """How many blobs the bucket holds under the prefix (listed as fsck lists it)."""
    from casfs.blobs.s3 import S3BlobStore
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    lister = S3BlobStore(bucket, prefix, LISTER_ROOT / "tmp", LISTER_ROOT / "cache")
    return sum(1 for _ in lister.list_blobs())


LISTER_ROOT = Path(os.environ.get("TMPDIR", "/tmp")) / f"casfs-test-lister-{os.getpid()}"


@pytest.fixture
def bucket(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.modules[__name__], "LISTER_ROOT", tmp_path / "lister")
    from casfs.blobs.s3 import S3BlobStore
    root = tmp_path / "lister"
    elsewhere = S3BlobStore("casfs", "bucket-made", root / "tmp", root / "cache")
    staging = elsewhere.stage()  # the server makes the bucket at its first object
    try:
        staging.write(b"x", 0)
        elsewhere.place(staging)
    finally:
        staging.discard()
    return f"s3://casfs/{uuid.uuid4().hex}"


def test_a_store_moves_its_blobs_and_reads_the_same_bytes(
        store_path: Path, tmp_path: Path, bucket: str) -> None:
    expected = fill(store_path, BLOBS)
    preview = casfs(store_path, "migrate", "--blobs", bucket, "--json")
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["blobs"] == BLOBS
    with Store.open(store_path) as store:
        assert store.locations.blobs.startswith("file://"), "a preview switched the store"

    # Killed halfway: the store keeps its local blobs; the rerun goes on from there.
    mover = subprocess.Popen(
        [sys.executable, "-m", "casfs.tools", "--store", str(store_path), "migrate",
         "--blobs", bucket, "--apply"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while objects(bucket) < BLOBS // 3:
        assert mover.poll() is None, "the move ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    mover.send_signal(signal.SIGKILL)
    mover.wait()
    copied_before = objects(bucket)
    assert BLOBS // 3 <= copied_before < BLOBS
    with Store.open(store_path) as store:
        assert Locations.read(store.layout).blobs.startswith("file://")
        doc = store.catalog.resolve_path("/r/W00000/d1.txt")
        assert doc is not None and doc.storage_uri.startswith("file://")

    result = casfs(store_path, "migrate", "--blobs", bucket, "--apply", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["switched"] and report["blobs"] == BLOBS
    assert report["copied"] + report["already_there"] == BLOBS
    assert report["already_there"] >= copied_before
    assert objects(bucket) == BLOBS

    # The local blobs are gone from the picture: reads come from the bucket.
    (store_path / "cas" / "sha256").rename(tmp_path / "blobs-moved-aside")
    (store_path / "cas" / "sha256").mkdir()
    with Store.open(store_path) as store:
        assert store.locations.blobs == bucket
        doc = store.catalog.resolve_path("/r/W00000/d1.txt")
        assert doc is not None and doc.storage_uri == store.blobs.uri(doc.sha256)
        assert fsck.fsck(store) == []
    mounter = Mounter(store_path, tmp_path / "mnt")
    try:
        mnt = mounter.mount("ro")
        for path, sha in expected.items():
            assert hashlib.sha256((mnt / path.lstrip("/")).read_bytes()).hexdigest() == sha, path
    finally:
        mounter.cleanup()


def test_a_damaged_or_missing_local_blob_is_named_and_nothing_is_switched(
        store_path: Path, bucket: str) -> None:
    expected = fill(store_path, 20)
    damaged, missing = sorted(set(expected.values()))[:2]
    cas = store_path / "cas" / "sha256"
    (cas / damaged[:2] / damaged[2:]).chmod(0o644)
    (cas / damaged[:2] / damaged[2:]).write_bytes(b"rotted")
    (cas / missing[:2] / missing[2:]).unlink()
    result = casfs(store_path, "migrate", "--blobs", bucket, "--apply")
    assert result.returncode == 1
    assert f"bytes do not match the name: {damaged}" in result.stdout
    assert f"missing locally: {missing}" in result.stdout
    with Store.open(store_path) as store:
        assert store.locations.blobs.startswith("file://")
    assert objects(bucket) == 18, "a damaged blob was uploaded under its name"


def test_migrate_refuses_a_bucket_that_does_not_answer(
        store_path: Path, s3_server: S3Server, bucket: str) -> None:
    fill(store_path, 3)
    s3_server.pause()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "casfs.tools", "--store", str(store_path), "migrate",
             "--blobs", bucket, "--apply"], capture_output=True, text=True, check=False,
            timeout=120, env={**os.environ, "CASFS_S3_TIMEOUT": "2"})
    finally:
        s3_server.resume()
    assert result.returncode == 2, result.stderr
    assert "nothing was switched" in result.stderr
    with Store.open(store_path) as store:
        assert store.locations.blobs.startswith("file://")


def test_a_blob_verify_quarantined_does_not_hold_the_move_back(
        store_path: Path, bucket: str) -> None:
    expected = fill(store_path, 5)
    bad = sorted(set(expected.values()))[0]
    blob = store_path / "cas" / "sha256" / bad[:2] / bad[2:]
    blob.chmod(0o644)
    blob.write_bytes(b"rotted")
    assert casfs(store_path, "verify").returncode == 1  # quarantined, named
    result = casfs(store_path, "migrate", "--blobs", bucket, "--apply", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["switched"] and report["known_absent"] == [bad]
    assert (report["copied"], report["missing"], report["damaged"]) == (4, [], [])


def test_a_one_machine_store_moves_to_postgresql_and_s3_in_one_command(
        store_path: Path, bucket: str, postgres_server: PostgresServer,
        tmp_path: Path) -> None:
    expected = fill(store_path, 30)
    url = postgres_server.url(postgres_server.create_database())
    result = casfs(store_path, "migrate", "--catalog", url, "--blobs", bucket, "--apply",
                   "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one document for both moves
    assert report["catalog"]["counts"]["documents"] == 30
    assert report["blobs"]["switched"] and report["blobs"]["copied"] == 30
    with Store.open(store_path) as store:
        assert (store.locations.catalog, store.locations.blobs) == (url, bucket)
        for path, sha in expected.items():
            doc = store.catalog.resolve_path(path)
            assert doc is not None and doc.sha256 == sha
            assert doc.storage_uri == store.blobs.uri(sha)
        assert fsck.fsck(store) == []
    again = casfs(store_path, "migrate", "--catalog", url, "--json")
    assert again.returncode == 2  # the store is on PostgreSQL already: said, nothing done
