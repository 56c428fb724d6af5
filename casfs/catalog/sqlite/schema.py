"""The catalog schema: the one place that defines and migrates it.

Tables
------
meta         key/value facts: `next_ino` (the inode counter).
directories  the tree's directories: resolvers (depth 1) and artifacts (depth 2).
             `ino` is the stable inode number; `name` the path component shown,
             derived from the identifier by `casfs.naming.dir_name_for`.
             `valid_from` (v3) is when the row took its present state.
directory_history (v3) every earlier state of a directory: the row as it was from
             `valid_from` to `valid_to`, and the `change` that ended it (rename,
             rmdir, mtime). A directory as it was at time T is the live row with
             valid_from <= T, or the history row with valid_from <= T < valid_to
             (time travel: `casfs mount --at`).
snapshots    (v3) named moments: every blob a document live at `at` uses is kept
             by gc, whatever the retention window, until the snapshot is deleted.
documents    one row per *version* of a document. A live row has `valid_to IS NULL`.
             A rename, overwrite or delete closes the row (sets `valid_to` and
             `change`) and, when the document goes on, inserts its next version
             with the same `ino`; nothing is updated in place except `mtime_ns`
             and `updated_at` (utimens). Partial unique indexes keep the seeds'
             key (artifact_id, source_url, resolver) and the virtual path
             unique among live rows. `source_url` is NULL for files that were
             written into the mount without one; NULLs never collide on the key.
variants     the seeds' optional per-document variants (pdf/html/supp).
blobs        one row per stored blob: size, first seen, the verify ledger and
             its state (present, quarantined, missing).
counters     monotonic counters behind the metrics (v2), by name and label text.

Times are Unix seconds (REAL) except `mtime_ns`, which is what the filesystem shows.
The version is `PRAGMA user_version`; each entry of MIGRATIONS moves it up by one.
"""

from __future__ import annotations

from collections.abc import Callable

import apsw

from casfs.errors import StoreError

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('next_ino', 2), ('dedup_hits', 0);

CREATE TABLE directories (
    ino         INTEGER PRIMARY KEY,
    parent_ino  INTEGER NOT NULL,
    name        TEXT NOT NULL,
    resolver    TEXT NOT NULL,
    artifact_id TEXT,                 -- NULL for a resolver directory
    created_at  REAL NOT NULL,
    mtime_ns    INTEGER NOT NULL
);
CREATE UNIQUE INDEX directories_by_name ON directories (parent_ino, name);
CREATE INDEX directories_listing ON directories (parent_ino, ino);
CREATE UNIQUE INDEX directories_by_id ON directories (resolver, artifact_id);
CREATE UNIQUE INDEX directories_one_per_resolver
    ON directories (resolver) WHERE artifact_id IS NULL;

CREATE TABLE blobs (
    sha256           TEXT PRIMARY KEY,
    bytes            INTEGER NOT NULL,
    first_seen       REAL NOT NULL,
    last_verified_at REAL,
    state            TEXT NOT NULL DEFAULT 'present'
) WITHOUT ROWID;

CREATE TABLE documents (
    id           INTEGER PRIMARY KEY,
    ino          INTEGER NOT NULL,
    artifact_id  TEXT NOT NULL,
    resolver     TEXT NOT NULL,
    source_url   TEXT,
    basename     TEXT NOT NULL,
    content_type TEXT,
    bytes        INTEGER NOT NULL,
    sha256       TEXT NOT NULL REFERENCES blobs (sha256),
    storage_uri  TEXT NOT NULL,
    run_id       TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    valid_from   REAL NOT NULL,
    valid_to     REAL,
    change       TEXT                 -- why the row was closed: overwrite, rename, unlink, ...
);
CREATE UNIQUE INDEX documents_live_key
    ON documents (artifact_id, source_url, resolver) WHERE valid_to IS NULL;
CREATE UNIQUE INDEX documents_live_path
    ON documents (resolver, artifact_id, basename) WHERE valid_to IS NULL;
CREATE UNIQUE INDEX documents_live_ino ON documents (ino) WHERE valid_to IS NULL;
CREATE INDEX documents_live_listing
    ON documents (resolver, artifact_id, ino) WHERE valid_to IS NULL;
CREATE INDEX documents_by_sha256 ON documents (sha256);
CREATE INDEX documents_by_ino ON documents (ino, valid_from);

CREATE TABLE variants (
    document_id  INTEGER NOT NULL REFERENCES documents (id),
    variant      TEXT NOT NULL CHECK (variant IN ('pdf', 'html', 'supp')),
    storage_uri  TEXT NOT NULL,
    bytes        INTEGER NOT NULL,
    content_type TEXT,
    sha256       TEXT NOT NULL REFERENCES blobs (sha256),
    PRIMARY KEY (document_id, variant)
);
"""

# v2: counters for metrics, kept in the catalog so that every process (mounts, gc,
# verify, imports) adds to the same totals; the verify ledger gets an index.
_V2 = """
CREATE TABLE counters (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '',  -- Prometheus label text, e.g. resolver="arxiv"
    value  INTEGER NOT NULL,
    PRIMARY KEY (name, labels)
) WITHOUT ROWID;
INSERT INTO counters (name, labels, value)
    SELECT 'casfs_dedup_hits_total', '', value FROM meta WHERE key = 'dedup_hits' AND value > 0;
DELETE FROM meta WHERE key = 'dedup_hits';
CREATE INDEX blobs_by_last_verified ON blobs (last_verified_at);
"""

# v3: directory history, so that the tree can be shown as it was at any time;
# documents are found by place and time without scanning every version; snapshots.
_V3 = """
ALTER TABLE directories ADD COLUMN valid_from REAL NOT NULL DEFAULT 0;
UPDATE directories SET valid_from = created_at;
CREATE TABLE directory_history (
    ino         INTEGER NOT NULL,
    parent_ino  INTEGER NOT NULL,
    name        TEXT NOT NULL,
    resolver    TEXT NOT NULL,
    artifact_id TEXT,
    created_at  REAL NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    valid_from  REAL NOT NULL,
    valid_to    REAL NOT NULL,
    change      TEXT NOT NULL
);
CREATE INDEX directory_history_by_parent ON directory_history (parent_ino, ino);
CREATE INDEX directory_history_by_ino ON directory_history (ino, valid_from);
CREATE INDEX directory_history_by_id ON directory_history (resolver, artifact_id, valid_from);
CREATE INDEX documents_by_place ON documents (resolver, artifact_id, basename, valid_from);
CREATE INDEX documents_by_directory ON documents (resolver, artifact_id, ino);
CREATE TABLE snapshots (
    name       TEXT PRIMARY KEY,
    at         REAL NOT NULL,     -- the moment it keeps
    note       TEXT,
    created_at REAL NOT NULL
);
"""

Migration = Callable[[apsw.Connection], None]


def _sql(script: str) -> Migration:
    def run(conn: apsw.Connection) -> None:
        conn.execute(script)

    return run


# MIGRATIONS[i] moves a catalog from version i to version i + 1.
MIGRATIONS: list[Migration] = [_sql(_V1), _sql(_V2), _sql(_V3)]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: apsw.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    assert isinstance(version, int)
    return version


def migrate(conn: apsw.Connection) -> None:
    """Bring the catalog to SCHEMA_VERSION, refusing one from a newer casfs."""
    with conn:
        current = schema_version(conn)
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"catalog schema version {current} is newer than this casfs understands "
                f"({SCHEMA_VERSION}); upgrade casfs"
            )
        for version in range(current, SCHEMA_VERSION):
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
