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


def test_the_mounts_hot_statements_scan_no_table(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement of a lookup, a listing and a registration of the mount's write
    searches an index: a scan of documents costs a whole table per request."""
    from casfs import synthetic
    from casfs.records import NewDocument, PathWrite

    Store.init(tmp_path / "store").close()
    with Store.open(tmp_path / "store") as store:
        synthetic.fill(store, resolver="r", artifacts=200, per_artifact=5)
        catalog = store.catalog
        assert isinstance(catalog, SqliteCatalog)
        seen: list[tuple[str, tuple[object, ...]]] = []
        for name in ("rows", "one", "execute"):
            original = getattr(catalog.db, name)

            def recording(sql: str, args: tuple[object, ...] = (), *, _call=original):  # type: ignore[no-untyped-def]
                seen.append((sql, tuple(args)))
                return _call(sql, args)
            monkeypatch.setattr(catalog.db, name, recording)
        directory = catalog.find_directory("r", "W00000007")
        assert directory is not None
        doc = catalog.lookup_document(directory, "doc001.pdf")
        assert doc is not None and catalog.get_document(doc.ino) == doc
        catalog.list_documents(directory, 0, 500)
        new = NewDocument(resolver="r", artifact_id="W00000007", basename="doc001.pdf",
                          sha256=doc.sha256, bytes=doc.bytes, storage_uri=doc.storage_uri)
        catalog.write_at_paths([PathWrite(doc.ino, directory, "doc001.pdf", new),
                                PathWrite(catalog.reserve_inos().start, directory, "new.pdf",
                                          new)])
        monkeypatch.undo()
        plans = {sql: " / ".join(str(step[3]) for step in catalog.db.rows(
            "EXPLAIN QUERY PLAN " + sql, args))
            for sql, args in seen if sql.lstrip().upper().startswith(("SELECT", "UPDATE"))}
        assert len(plans) >= 5
        scans = {sql: plan for sql, plan in plans.items() if "SCAN documents" in plan}
        assert scans == {}
