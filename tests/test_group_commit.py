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

from casfs.catalog import Catalog
from casfs.errors import Conflict
from casfs.mount.catalog_writer import _run_together
from casfs.records import Document, NewDocument
from casfs.store import Store

from .conftest import BOTH_CATALOGS, Mounter

pytestmark = BOTH_CATALOGS


def new(name: str, sha: str) -> NewDocument:
    return NewDocument(resolver="unpaywall", artifact_id="W1", basename=name, sha256=sha,
                       bytes=1, storage_uri="file:///x")


def test_a_write_that_fails_in_a_round_fails_alone(store: Store) -> None:
    catalog = store.catalog
    directory = catalog.ensure_directory("unpaywall", "W1")
    taken, _ = catalog.register(new("taken.pdf", "c" * 64))
    inos = [catalog.reserve_inos().start, catalog.reserve_inos().start]

    def write(ino: int, name: str, sha: str) -> object:
        return lambda c: c.write_at_path(ino, directory, name, new(name, sha))

    def conflicting(c: Catalog) -> Document:
        return c.rename_document(inos[0], directory, "taken.pdf", replace=False)

    answers = _run_together(catalog, [write(inos[0], "a.pdf", "a" * 64), conflicting,
                                      write(inos[1], "b.pdf", "b" * 64)])  # type: ignore[list-item]
    assert isinstance(answers[0], outcome.Value) and isinstance(answers[2], outcome.Value)
    assert isinstance(answers[1], outcome.Error) and isinstance(answers[1].error, Conflict)
    assert {d.basename for d in catalog.list_documents(directory, 0, 10)} == {
        "a.pdf", "b.pdf", "taken.pdf"}
    assert catalog.get_document(taken.ino) == taken


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
