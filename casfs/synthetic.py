"""Large synthetic catalogs for benchmarks, written straight through SQL.

`fill` makes `artifacts` artifact directories under one resolver with `per_artifact`
documents each, all pointing at one real blob (so reads through a mount work),
in a few large transactions: a million records take about a minute instead of
hours of single registrations. Only for empty benchmark stores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from casfs.catalog.database import Database
from casfs.catalog.sql_catalog import SqlCatalog
from casfs.ingest import place_blob
from casfs.store import Store

BATCH = 50_000


def fill(store: Store, *, resolver: str, artifacts: int, per_artifact: int,
         content: bytes = b"synthetic document\n", versions: int = 1,
         version_every: float = 3600.0) -> int:
    """Add artifacts x per_artifact documents; returns the number of documents. With
    `versions` > 1 each document also has that many versions in its history: the
    first became current `versions - 1` x `version_every` seconds ago, each later one
    `version_every` after the one before (for time-travel benchmarks)."""
    staging = store.blobs.stage()
    try:
        staging.write(content, 0)
        blob = place_blob(store.blobs, staging)
    finally:
        staging.discard()
    catalog = store.catalog
    assert isinstance(catalog, SqlCatalog), "synthetic catalogs need an SQL catalog"
    now = time.time()
    now_ns = int(now * 1e9)
    resolver_dir = catalog.ensure_directory(resolver, None)
    with catalog.write_transaction():
        inos = _inodes(catalog)
        catalog.db.execute("INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, ?, ?) "
                           "ON CONFLICT DO NOTHING", (blob.sha256, blob.bytes, now))
        catalog.db.execute("UPDATE directories SET valid_from = ? WHERE ino = ?",
                           (now - versions * version_every, resolver_dir.ino))  # all along
        dirs: list[tuple[object, ...]] = []
        docs: list[tuple[object, ...]] = []
        for a in range(artifacts):
            artifact = f"W{a:08d}"
            dirs.append((next(inos), resolver_dir.ino, artifact, resolver, artifact, now,
                         now_ns, now - versions * version_every))
            for d in range(per_artifact):
                ino = next(inos)
                for v in range(versions):
                    since = now - (versions - 1 - v) * version_every
                    until = since + version_every if v < versions - 1 else None
                    docs.append((ino, artifact, resolver, f"https://bench.example/{a}/{d}",
                                 f"doc{d:03d}.pdf", blob.bytes, blob.sha256,
                                 blob.storage_uri, now, now, now_ns, since, until,
                                 None if until is None else "overwrite"))
            if len(docs) >= BATCH:
                _flush(catalog.db, dirs, docs)
        _flush(catalog.db, dirs, docs)
    catalog.db.execute("ANALYZE")
    return artifacts * per_artifact


def _inodes(catalog: SqlCatalog) -> Iterator[int]:
    """Inode numbers, taken inside the load's write transaction."""
    while True:
        yield catalog.take_ino()


def _flush(db: Database, dirs: list[tuple[object, ...]], docs: list[tuple[object, ...]]) -> None:
    db.executemany(
        "INSERT INTO directories (ino, parent_ino, name, resolver, artifact_id, created_at, "
        "mtime_ns, valid_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", dirs)
    db.executemany(
        "INSERT INTO documents (ino, artifact_id, resolver, source_url, basename, bytes, "
        "sha256, storage_uri, created_at, updated_at, mtime_ns, valid_from, valid_to, "
        "change) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", docs)
    dirs.clear()
    docs.clear()
