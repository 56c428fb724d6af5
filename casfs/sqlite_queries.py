"""Read-only queries of the SQLite catalog for the tools: search, where, dedup figures.

A mixin of `SqliteCatalog`, kept apart so that the write paths and the reports can
each be read on their own. Every query returns live documents only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apsw

from casfs.records import (
    BlobUsage,
    Document,
    DocumentFilter,
    DuplicateGroup,
    Found,
    GcPolicy,
)

DOC_COLUMNS = (
    "id, ino, artifact_id, resolver, source_url, basename, content_type, bytes, sha256, "
    "storage_uri, run_id, created_at, updated_at, mtime_ns, valid_from, valid_to, change"
)
_D_COLUMNS = ", ".join(f"d.{c}" for c in DOC_COLUMNS.split(", "))
# The virtual path of a document, joined from its artifact and resolver directories.
_FOUND = (f"SELECT {_D_COLUMNS}, '/' || r.name || '/' || a.name || '/' || d.basename "
          "FROM documents d "
          "JOIN directories a ON a.resolver = d.resolver AND a.artifact_id = d.artifact_id "
          "JOIN directories r ON r.ino = a.parent_ino "
          "WHERE d.valid_to IS NULL")


class SqliteQueries:
    conn: apsw.Connection

    def search(self, query: DocumentFilter) -> Iterator[Found]:
        """Live documents that pass every filter of `query`, oldest first."""
        clauses, args = _where(query)
        sql = _FOUND + "".join(f" AND {c}" for c in clauses) + " ORDER BY d.id"
        if query.limit is not None:
            sql += " LIMIT ?"
            args.append(query.limit)
        for row in self.conn.execute(sql, args):
            yield Found(Document(*row[:-1]), row[-1])

    def blobs_to_verify(self, *, sample: float | None = None,
                        limit: int | None = None) -> Iterator[tuple[str, int]]:
        """(sha256, bytes) of blobs believed present, least recently verified first
        (never verified ones before all others); `sample` keeps about that fraction."""
        sql = "SELECT sha256, bytes FROM blobs WHERE state = 'present'"
        args: list[Any] = []
        if sample is not None:
            sql += " AND abs(random() % 1000000) < ?"
            args.append(int(sample * 1_000_000))
        sql += " ORDER BY last_verified_at, sha256"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        yield from self.conn.execute(sql, args)

    def garbage_blobs(self, policy: GcPolicy, now: float, after: str, limit: int
                      ) -> list[tuple[str, int, float, str | None]]:
        """(sha256, bytes, first_seen, JSON [resolver, artifact, basename, closed at] of
        the record that last used it) for the next `limit` blobs after `after` that no
        kept record references; a list, so the read is over when it returns."""
        sql, args = _garbage_sql(policy, one=False)
        return list(self.conn.execute(sql, {**args, "now": now, "after": after,
                                            "limit": limit}))

    def is_garbage(self, sha256: str, policy: GcPolicy, now: float) -> bool:
        sql, args = _garbage_sql(policy, one=True)
        return bool(list(self.conn.execute(sql, {**args, "now": now, "sha": sha256})))

    # -- fsck ------------------------------------------------------------------
    def integrity_problems(self) -> list[str]:
        found = [row[0] for row in self.conn.execute("PRAGMA integrity_check")]
        problems = [] if found == ["ok"] else found[:10]
        problems += [f"{table} row {rowid} points to a missing {parent} row"
                     for table, rowid, parent, _ in self.conn.execute(
                         "PRAGMA foreign_key_check")]
        return problems

    def live_blob_usage(self) -> Iterator[BlobUsage]:
        for row in self.conn.execute(
                "SELECT d.sha256, b.state, d.bytes, b.bytes, count(*), min(d.ino) "
                "FROM documents d JOIN blobs b USING (sha256) WHERE d.valid_to IS NULL "
                "GROUP BY d.sha256, d.bytes"):
            yield BlobUsage(*row)

    def records_without_directory(self) -> Iterator[Document]:
        for row in self.conn.execute(
                f"SELECT {_D_COLUMNS} FROM documents d WHERE d.valid_to IS NULL AND NOT "
                "EXISTS (SELECT 1 FROM directories a WHERE a.resolver = d.resolver "
                "AND a.artifact_id = d.artifact_id)"):
            yield Document(*row)

    def path_collisions(self) -> Iterator[tuple[str, int]]:
        for resolver, artifact_id, basename, count in self.conn.execute(
                "SELECT resolver, artifact_id, basename, count(*) FROM documents "
                "WHERE valid_to IS NULL GROUP BY 1, 2, 3 HAVING count(*) > 1"):
            yield f"/{resolver}/{artifact_id}/{basename}", count

    def blob_sizes_with_prefix(self, prefix: str) -> dict[str, int]:
        """{sha256: bytes} of the blobs (not deleted) whose hash starts with `prefix`."""
        return dict(self.conn.execute(
            "SELECT sha256, bytes FROM blobs WHERE sha256 >= ? AND sha256 < ? "
            "AND state != 'deleted'", (prefix, prefix + "g")))

    def blob_state(self, sha256: str) -> str:
        for (state,) in self.conn.execute("SELECT state FROM blobs WHERE sha256 = ?",
                                          (sha256,)):
            return str(state)
        return "absent"

    def live_hashes_by_key(self, keys: list[tuple[str, str, str]]
                           ) -> dict[tuple[str, str, str], str]:
        """{(artifact_id, source_url, resolver): sha256} of the keys that are live."""
        if not keys:
            return {}
        values = ", ".join("(?, ?, ?)" for _ in keys)
        rows = self.conn.execute(
            "SELECT artifact_id, source_url, resolver, sha256 FROM documents "
            f"WHERE valid_to IS NULL AND (artifact_id, source_url, resolver) IN (VALUES {values})",
            [part for key in keys for part in key])
        return {(a, u, r): sha for a, u, r, sha in rows}

    def blob_size(self, sha256: str) -> int | None:
        for (size,) in self.conn.execute("SELECT bytes FROM blobs WHERE sha256 = ?", (sha256,)):
            return int(size)
        return None

    def blobs_to_verify_bytes(self) -> int:
        for (total,) in self.conn.execute(
                "SELECT ifnull(sum(bytes), 0) FROM blobs WHERE state = 'present'"):
            return int(total)
        return 0

    def last_at_path(self, resolver: str, artifact_id: str, basename: str) -> Document | None:
        """The newest version, live or closed, that was ever at this place."""
        for row in self.conn.execute(
                f"SELECT {DOC_COLUMNS} FROM documents WHERE resolver = ? AND artifact_id = ? "
                "AND basename = ? ORDER BY valid_to IS NOT NULL, valid_from DESC, id DESC "
                "LIMIT 1", (resolver, artifact_id, basename)):
            return Document(*row)
        return None

    def blobs_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Stored hashes that start with `prefix` (lowercase hex), at most `limit`."""
        rows = self.conn.execute("SELECT sha256 FROM blobs WHERE sha256 >= ? AND sha256 < ? "
                                 "ORDER BY sha256 LIMIT ?", (prefix, prefix + "g", limit))
        return [r[0] for r in rows]

    def duplicate_groups(self, top: int) -> list[DuplicateGroup]:
        """The `top` blobs shared by most bytes saved, with the paths that share them."""
        rows = list(self.conn.execute(
            "SELECT sha256, max(bytes), count(*) AS refs FROM documents "
            "WHERE valid_to IS NULL GROUP BY sha256 HAVING refs > 1 "
            "ORDER BY (refs - 1) * max(bytes) DESC, sha256 LIMIT ?", (top,)))
        return [DuplicateGroup(sha, size, refs,
                               [f.path for f in self.search(DocumentFilter(sha256=sha))])
                for sha, size, refs in rows]

    def savings_by_resolver(self) -> list[dict[str, Any]]:
        """Per resolver: documents, logical bytes, and the bytes dedup saved, each shared
        blob's saving split evenly among the documents that share it."""
        rows = self.conn.execute(
            "WITH refs AS (SELECT sha256, count(*) AS n FROM documents "
            "              WHERE valid_to IS NULL GROUP BY sha256) "
            "SELECT d.resolver, count(*), sum(d.bytes), "
            "       CAST(round(sum(d.bytes * (refs.n - 1.0) / refs.n)) AS INTEGER) "
            "FROM documents d JOIN refs USING (sha256) WHERE d.valid_to IS NULL "
            "GROUP BY d.resolver ORDER BY 4 DESC, d.resolver")
        return [{"resolver": r, "documents": n, "logical_bytes": logical, "saved_bytes": saved}
                for r, n, logical, saved in rows]

    def content_type_conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """Blobs registered under more than one content type: worth a look."""
        rows = self.conn.execute(
            "SELECT sha256, group_concat(DISTINCT ifnull(content_type, '(none)')) "
            "FROM documents WHERE valid_to IS NULL GROUP BY sha256 "
            "HAVING count(DISTINCT ifnull(content_type, '')) > 1 ORDER BY sha256 LIMIT ?",
            (limit,))
        return [{"sha256": sha, "content_types": sorted(types.split(","))}
                for sha, types in rows]


def _garbage_sql(policy: GcPolicy, one: bool) -> tuple[str, dict[str, Any]]:
    """The query for garbage blobs (or for whether one is garbage, :sha), with its
    bindings except :now. A documents row keeps its blob while it is live or closed
    for less than its retention window: the first matching rule's, else the default."""
    window = "CASE"
    args: dict[str, Any] = {"grace": policy.grace, "keep": policy.keep_history}
    for i, rule in enumerate(policy.rules):
        tests = []
        if rule.resolver is not None:
            tests.append(f"d.resolver = :resolver{i}")
            args[f"resolver{i}"] = rule.resolver
        if rule.content_type is not None:
            tests.append(f"d.content_type = :type{i}")
            args[f"type{i}"] = rule.content_type
        window += f" WHEN {' AND '.join(tests)} THEN :keep{i}"
        args[f"keep{i}"] = rule.keep_history
    window = f"{window} ELSE :keep END" if policy.rules else ":keep"
    kept = f"(d.valid_to IS NULL OR d.valid_to > :now - {window})"
    sql = ("SELECT b.sha256, b.bytes, b.first_seen, "
           " (SELECT json_array(d.resolver, d.artifact_id, d.basename, d.valid_to) "
           "  FROM documents d WHERE d.sha256 = b.sha256 ORDER BY d.valid_to DESC LIMIT 1) "
           "FROM blobs b WHERE b.state != 'deleted' AND b.first_seen < :now - :grace "
           f"AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.sha256 = b.sha256 AND {kept}) "
           "AND NOT EXISTS (SELECT 1 FROM variants v WHERE v.sha256 = b.sha256) ")
    sql += "AND b.sha256 = :sha" if one else \
        "AND b.sha256 > :after ORDER BY b.sha256 LIMIT :limit"
    return sql, args


def _where(query: DocumentFilter) -> tuple[list[str], list[Any]]:
    conditions: list[tuple[str, Any]] = [
        ("d.resolver = ?", query.resolver),
        ("d.content_type = ?", query.content_type),
        ("d.artifact_id GLOB ?", query.artifact_glob),
        ("instr(d.source_url, ?) > 0", query.url_substring),
        ("d.run_id = ?", query.run_id),
        ("d.created_at >= ?", query.since),
        ("d.created_at < ?", query.until),
        ("d.bytes >= ?", query.min_size),
        ("d.bytes <= ?", query.max_size),
        ("d.artifact_id = ?", query.artifact_id),
        ("d.sha256 = ?", query.sha256),
    ]
    used = [(sql, value) for sql, value in conditions if value is not None]
    return [sql for sql, _ in used], [value for _, value in used]
