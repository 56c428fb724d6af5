"""What only the SQLite catalog has: its schema versions (PRAGMA user_version)."""

from pathlib import Path

import apsw
import pytest

from casfs.catalog.sqlite import SqliteCatalog
from casfs.catalog.sqlite.schema import SCHEMA_VERSION
from casfs.errors import StoreError
from casfs.store import Store


def test_a_catalog_from_a_newer_casfs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    SqliteCatalog(path).close()
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteCatalog(path)


def test_a_version_1_catalog_is_migrated_and_keeps_its_counts(tmp_path: Path) -> None:
    from casfs.catalog.sqlite import schema

    path = tmp_path / "catalog.db"
    conn = apsw.Connection(str(path))
    schema.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("UPDATE meta SET value = 3 WHERE key = 'dedup_hits'")
    conn.close()
    catalog = SqliteCatalog(path)
    try:
        assert schema.schema_version(catalog.conn) == SCHEMA_VERSION
        assert catalog.stats()["dedup_hits"] == 3
        assert ("casfs_dedup_hits_total", "", 3) in catalog.counters()
    finally:
        catalog.close()


def test_opening_a_missing_store_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="casfs init"):
        Store.open(tmp_path / "nowhere")
