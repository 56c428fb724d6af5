"""A catalog made before directories had a history migrates with its data (SQLite
schema 2 -> 3, PostgreSQL 1 -> 2): its directories count as unchanged since they
were made, and past moments show its documents' versions as they were."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from casfs.catalog import ROOT_INO, Catalog, open_catalog, sqlite_url
from casfs.catalog.postgres import schema as pg_schema
from casfs.catalog.postgres.database import PostgresDatabase
from casfs.catalog.sqlite import schema as sqlite_schema

from .postgres import PostgresServer

SHA_A, SHA_B = "a" * 64, "b" * 64
DOC = ("INSERT INTO documents (ino, artifact_id, resolver, source_url, basename, bytes, "
       "sha256, storage_uri, created_at, updated_at, mtime_ns, valid_from, valid_to, change) "
       "VALUES (10, 'W1', 'unpaywall', 'https://x/a.pdf', 'a.pdf', 1, ?, 'u', 1100, 1100, 0, "
       "?, ?, ?)")
OLD_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT INTO directories (ino, parent_ino, name, resolver, artifact_id, created_at, "
     "mtime_ns) VALUES (2, 1, 'unpaywall', 'unpaywall', NULL, 1000, 0), "
     "(3, 2, 'W1', 'unpaywall', 'W1', 1000, 0)", ()),
    ("INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, 1, 1100), (?, 1, 1200)",
     (SHA_A, SHA_B)),
    (DOC, (SHA_A, 1100, 1200, "overwrite")),
    (DOC, (SHA_B, 1200, None, None)),
]


def old_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "catalog.db"
    conn = apsw.Connection(str(path))
    for migration in sqlite_schema.MIGRATIONS[:2]:
        migration(conn)
    conn.execute("PRAGMA user_version = 2")
    for sql, args in OLD_ROWS:
        conn.execute(sql, args)
    conn.close()
    return sqlite_url(path)


def old_postgres(server: PostgresServer) -> str:
    url = server.url(server.create_database())
    db = PostgresDatabase(url)
    try:
        with db.transaction():
            pg_schema.MIGRATIONS[0](db)
            db.execute("UPDATE schema_version SET version = 1")
            for sql, args in OLD_ROWS:
                db.execute(sql, args)
    finally:
        db.close()
    return url


def paths(catalog: Catalog) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for resolver in catalog.list_directories(ROOT_INO, 0, 100):
        for artifact in catalog.list_directories(resolver.ino, 0, 100):
            found[f"/{resolver.name}/{artifact.name}"] = None
            for doc in catalog.list_documents(artifact, 0, 100):
                found[f"/{resolver.name}/{artifact.name}/{doc.basename}"] = doc.sha256
    return found


@pytest.mark.parametrize("make", ["sqlite", "postgresql"])
def test_a_catalog_of_the_previous_schema_migrates_with_its_data(
        make: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    maker: Callable[[], str] = (lambda: old_sqlite(tmp_path)) if make == "sqlite" else \
        (lambda: old_postgres(request.getfixturevalue("postgres_server")))
    url = maker()
    catalog = open_catalog(url)  # migrates
    try:
        assert paths(catalog) == {"/unpaywall/W1": None, "/unpaywall/W1/a.pdf": SHA_B}
        expected = {999: {}, 1000: {"/unpaywall/W1": None},
                    1150: {"/unpaywall/W1": None, "/unpaywall/W1/a.pdf": SHA_A},
                    1250: {"/unpaywall/W1": None, "/unpaywall/W1/a.pdf": SHA_B}}
        for moment, tree in expected.items():
            view = open_catalog(url)
            try:
                view.show_at(moment)
                assert paths(view) == tree, moment
            finally:
                view.close()
        artifact = catalog.find_directory("unpaywall", "W1")
        assert artifact is not None
        catalog.rename_directory(artifact.ino, artifact.parent_ino, "W9")  # history grows
        view = open_catalog(url)
        try:
            view.show_at(1150)
            assert paths(view) == expected[1150]
        finally:
            view.close()
    finally:
        catalog.close()
    versions = {"sqlite": sqlite_schema.SCHEMA_VERSION, "postgresql": pg_schema.SCHEMA_VERSION}
    assert versions[make] == (3 if make == "sqlite" else 2)
