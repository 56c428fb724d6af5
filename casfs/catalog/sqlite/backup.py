"""Backing up and restoring the catalog.

A backup is a directory with `catalog.db`, copied with SQLite's online backup API
from one read snapshot (in WAL mode that never blocks writers, so mounts keep
running), and `backup.json`: when, from which store, the counts, the schema version
and the file's SHA-256. Restore checks all of that and SQLite's integrity check
before it touches anything, refuses while a mount of the store is running, and keeps
the catalog it replaces. Blobs are not part of a catalog backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import apsw

from casfs import __version__
from casfs.catalog.sqlite import SqliteCatalog, schema
from casfs.errors import CasfsError, StoreError
from casfs.processes import running_mounts
from casfs.store import CATALOG_FILE, Store, StoreLayout

META_FILE = "backup.json"


class BadBackup(CasfsError):
    """The backup is damaged or is not one: nothing was replaced."""

    exit_code = 1


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def backup(store: Store, dest: Path) -> dict[str, Any]:
    if not isinstance(store.catalog, SqliteCatalog):
        raise CasfsError("casfs backup copies an SQLite catalog; back up a PostgreSQL "
                         "catalog with pg_dump (the blobs are not in either)")
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / (CATALOG_FILE + ".partial")
    partial.unlink(missing_ok=True)
    copy = apsw.Connection(str(partial))
    try:
        with copy.backup("main", store.catalog.conn, "main") as job:
            job.step(-1)  # all pages from one snapshot
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    finally:
        copy.close()
    checked = SqliteCatalog(partial, readonly=True)
    try:
        counts = checked.stats()
        version = schema.schema_version(checked.conn)
    finally:
        checked.close()
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    partial.replace(dest / CATALOG_FILE)
    meta = {"time": time.time(), "store": str(store.layout.root), "counts": counts,
            "schema_version": version, "sha256": _file_sha256(dest / CATALOG_FILE),
            "casfs_version": __version__}
    (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def check(src: Path) -> dict[str, Any]:
    """The metadata of a good backup, or BadBackup saying what is wrong with it."""
    try:
        meta: dict[str, Any] = json.loads((src / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise BadBackup(f"{src}: no readable {META_FILE} ({e})") from None
    catalog = src / CATALOG_FILE
    if not catalog.is_file():
        raise BadBackup(f"{src}: {CATALOG_FILE} is missing")
    if _file_sha256(catalog) != meta.get("sha256"):
        raise BadBackup(f"{catalog}: checksum does not match {META_FILE}: damaged")
    conn = apsw.Connection(str(catalog), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        version = schema.schema_version(conn)
    except apsw.Error as e:
        raise BadBackup(f"{catalog}: not a readable catalog ({e})") from None
    finally:
        conn.close()
    if result != ["ok"]:
        raise BadBackup(f"{catalog}: integrity check failed: {'; '.join(result[:5])}")
    if version > schema.SCHEMA_VERSION:
        raise BadBackup(f"{catalog}: schema version {version} is newer than this casfs")
    return meta


def restore(store_root: Path, src: Path) -> Path:
    """Put a checked backup in place of the store's catalog; return where the old one is."""
    check(src)
    layout = StoreLayout(store_root.absolute())
    if not layout.catalog.is_file():
        raise StoreError(f"no casfs store at {store_root}")
    running = running_mounts(layout)
    if running:
        raise StoreError(f"{store_root} is mounted ({len(running)} mount(s)): unmount first")
    # Fold the WAL into the old catalog so that the copy we keep is complete.
    old = apsw.Connection(str(layout.catalog))
    try:
        old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        old.execute("PRAGMA journal_mode = DELETE")
    finally:
        old.close()
    kept = layout.root / f"{CATALOG_FILE}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}"
    incoming = layout.root / (CATALOG_FILE + ".restoring")
    shutil.copyfile(src / CATALOG_FILE, incoming)
    with incoming.open("rb") as f:
        os.fsync(f.fileno())
    os.rename(layout.catalog, kept)
    os.rename(incoming, layout.catalog)
    for suffix in ("-wal", "-shm"):
        Path(str(layout.catalog) + suffix).unlink(missing_ok=True)
    SqliteCatalog(layout.catalog).close()  # back to WAL, migrated if the backup is older
    return kept
