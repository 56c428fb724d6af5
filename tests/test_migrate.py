"""`casfs migrate --catalog URL`: a SQLite store of 100,000 documents and their history
moves into PostgreSQL, with nothing lost, even when the move is killed halfway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from casfs import fsck, synthetic
from casfs.catalog import Catalog
from casfs.catalog.sql_catalog import SqlCatalog
from casfs.catalog.sql_queries import DOC_COLUMNS
from casfs.ingest import ingest_file
from casfs.records import DocumentFilter
from casfs.store import Locations, Store
from casfs.tools import cli

from .conftest import Mounter
from .postgres import PostgresServer

DOCUMENTS = int(os.environ.get("CASFS_MIGRATE_DOCUMENTS", "100000"))


def everything(catalog: Catalog) -> tuple[object, ...]:
    """Every version of every document (place, hash, times, change), the path of every
    live one, the directories, and the counters."""
    assert isinstance(catalog, SqlCatalog)
    versions = set(catalog.db.rows(f"SELECT {DOC_COLUMNS} FROM documents"))
    paths = {(f.document.ino, f.path) for f in catalog.search(DocumentFilter())}
    directories = set(catalog.db.rows("SELECT * FROM directories"))
    return versions, paths, directories, sorted(catalog.counters())


def make_store(path: Path, tmp_path: Path) -> None:
    with Store.init(path) as store:
        synthetic.fill(store, resolver="bench", artifacts=DOCUMENTS // 10, per_artifact=10)
        for i in range(200):  # real files, with history: overwrites, renames, deletes
            src = tmp_path / "src"
            src.write_bytes(os.urandom(500 + i))
            result = ingest_file(store, src, resolver="unpaywall", artifact_id=f"W{i % 20}",
                                 source_url=f"https://x/{i}", name=f"p{i}.pdf")
            src.write_bytes(os.urandom(600 + i))
            ingest_file(store, src, resolver="unpaywall", artifact_id=f"W{i % 20}",
                        source_url=f"https://x/{i}", name=f"p{i}.pdf")
            doc = result.document
            if i % 3 == 0:
                directory = store.catalog.directory_of(doc)
                store.catalog.rename_document(doc.ino, directory, f"renamed{i}.pdf", False)
            if i % 7 == 0:
                store.catalog.unlink_document(doc.ino)
        store.catalog.set_directory_mtime(1, 1_600_000_000_000_000_000)


def test_a_store_moves_to_postgresql_and_a_killed_move_completes(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    path = tmp_path / "store"
    make_store(path, tmp_path)
    with Store.open(path, readonly=True) as store:
        before = everything(store.catalog)
        stats = store.catalog.stats()
    url = postgres_server.url(postgres_server.create_database())

    # The preview changes nothing.
    assert cli.main(["--store", str(path), "migrate", "--catalog", url]) == 0
    assert Locations.read(Store.open(path).layout).catalog.startswith("sqlite:")

    # Killed halfway: the store stays on SQLite, and the target keeps nothing.
    move = subprocess.Popen([sys.executable, "-m", "casfs.tools", "--store", str(path),
                             "migrate", "--catalog", url, "--apply"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY documents%'").fetchone():
            assert move.poll() is None, move.communicate()
            assert time.monotonic() < deadline, "the move never started copying documents"
            time.sleep(0.005)
        move.send_signal(signal.SIGKILL)
        move.wait()
        time.sleep(0.2)
        assert watcher.execute("SELECT to_regclass('documents')").fetchone() == (None,)
    with Store.open(path, readonly=True) as store:
        assert store.locations.catalog.startswith("sqlite:")

    # The rerun completes, and leaves the planner its statistics.
    assert cli.main(["--store", str(path), "migrate", "--catalog", url, "--apply"]) == 0
    with psycopg.connect(url, autocommit=True) as watcher:
        assert watcher.execute("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                               "WHERE relname = 'documents'").fetchone() == (True,)
    with Store.open(path) as store:
        assert store.locations.catalog == url
        assert store.catalog.stats() == stats
        assert everything(store.catalog) == before
        assert fsck.fsck(store) == []
        assert store.catalog.root_mtime_ns() == 1_600_000_000_000_000_000
        # New inodes and versions go on above the moved ones.
        src = tmp_path / "new"
        src.write_bytes(b"after the move")
        new = ingest_file(store, src, resolver="unpaywall", artifact_id="W0").document
        assert new.ino > max(int(v[1]) for v in before[0])  # type: ignore[attr-defined]
    # A rerun after the switch finds nothing to do.
    assert cli.main(["--store", str(path), "migrate", "--catalog", url, "--apply"]) == 2


def test_the_mount_shows_the_same_tree_after_the_move(tmp_path: Path,
                                                      postgres_server: PostgresServer) -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    path = tmp_path / "store"
    with Store.init(path) as store:
        for i in range(30):
            src = tmp_path / "src"
            src.write_bytes(f"document {i}".encode() * 50)
            ingest_file(store, src, resolver="arxiv", artifact_id=f"A{i % 4}", name=f"d{i}.txt")
    mounter = Mounter(path, tmp_path / "mnt")
    try:
        mnt = mounter.mount()
        tree = {str(p.relative_to(mnt)): p.read_bytes() for p in mnt.rglob("*") if p.is_file()}
        mounter.umount()
        url = postgres_server.url(postgres_server.create_database())
        assert cli.main(["--store", str(path), "migrate", "--catalog", url, "--apply"]) == 0
        mnt = mounter.mount()
        after = {str(p.relative_to(mnt)): p.read_bytes() for p in mnt.rglob("*") if p.is_file()}
        assert after == tree and len(tree) == 30
    finally:
        mounter.cleanup()


def test_migrate_refuses_while_mounted_and_a_database_in_use(
        tmp_path: Path, postgres_server: PostgresServer, mounter: Mounter) -> None:
    mounter.mount()
    url = postgres_server.url(postgres_server.create_database())
    assert cli.main(["--store", str(mounter.store_path), "migrate", "--catalog", url,
                     "--apply"]) == 2
    mounter.umount()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE someone_elses (x int)")
    assert cli.main(["--store", str(mounter.store_path), "migrate", "--catalog", url,
                     "--apply"]) == 2
    with Store.open(mounter.store_path) as store:
        assert store.locations.catalog.startswith("sqlite:")
