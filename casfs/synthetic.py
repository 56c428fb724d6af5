"""Large synthetic catalogs for benchmarks, written straight through SQL.

`fill` makes `artifacts` artifact directories under one resolver with `per_artifact`
documents each, all pointing at one real blob (so reads through a mount work),
in a few large transactions: a million records take about a minute instead of
hours of single registrations. Only for empty benchmark stores.
"""

from __future__ import annotations

import time

import apsw

from casfs.ingest import place_blob
from casfs.store import Store

BATCH = 50_000


def fill(store: Store, *, resolver: str, artifacts: int, per_artifact: int,
         content: bytes = b"synthetic document\n") -> int:
    """Add artifacts x per_artifact documents; returns the number of records."""
    staging = store.blobs.stage()
    try:
        staging.write(content, 0)
        blob = place_blob(store.blobs, staging)
    finally:
        staging.discard()
    conn = store.catalog.conn
    now = time.time()
    now_ns = int(now * 1e9)
    resolver_dir = store.catalog.ensure_directory(resolver, None)
    with store.catalog.write_transaction():
        conn.execute("INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, ?, ?) "
                     "ON CONFLICT DO NOTHING", (blob.sha256, blob.bytes, now))
        (next_ino,) = next(iter(conn.execute(
            "SELECT value FROM meta WHERE key = 'next_ino'")))
        ino = int(next_ino)
        dirs: list[tuple[object, ...]] = []
        docs: list[tuple[object, ...]] = []
        for a in range(artifacts):
            artifact = f"W{a:08d}"
            dirs.append((ino, resolver_dir.ino, artifact, resolver, artifact, now, now_ns))
            ino += 1
            for d in range(per_artifact):
                docs.append((ino, artifact, resolver, f"https://bench.example/{a}/{d}",
                             f"doc{d:03d}.pdf", blob.bytes, blob.sha256, blob.storage_uri,
                             now, now, now_ns, now))
                ino += 1
            if len(docs) >= BATCH:
                _flush(conn, dirs, docs)
        _flush(conn, dirs, docs)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'next_ino'", (ino,))
    conn.execute("ANALYZE")
    return artifacts * per_artifact


def _flush(conn: apsw.Connection, dirs: list[tuple[object, ...]],
           docs: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO directories (ino, parent_ino, name, resolver, artifact_id, created_at, "
        "mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?)", dirs)
    conn.executemany(
        "INSERT INTO documents (ino, artifact_id, resolver, source_url, basename, bytes, "
        "sha256, storage_uri, created_at, updated_at, mtime_ns, valid_from) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", docs)
    dirs.clear()
    docs.clear()
