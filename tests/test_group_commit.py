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

from casfs.ingest import place_blob
from casfs.mount.catalog_writer import register_together
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
