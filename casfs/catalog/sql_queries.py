"""Read-only queries of the catalog for the tools: search, where, dedup figures.

A mixin of `SqlCatalog`, kept apart so that the write paths and the reports can
each be read on their own. Every query returns live documents only (`search`: those
live at the moment the catalog shows, when it shows a past one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from casfs.catalog.database import Database, Dialect, Row
from casfs.records import (
    BlobUsage,
    Document,
    DocumentFilter,
    DuplicateGroup,
    Found,
    GcPolicy,
    LastUse,
)

if TYPE_CHECKING:
    from casfs.catalog.past import PastQueries

DOC_COLUMNS = (
    "id, ino, artifact_id, resolver, source_url, basename, content_type, bytes, sha256, "
    "storage_uri, run_id, created_at, updated_at, mtime_ns, valid_from, valid_to, change"
)
_D_COLUMNS = ", ".join(f"d.{c}" for c in DOC_COLUMNS.split(", "))
DIR_COLUMNS = "ino, parent_ino, name, resolver, artifact_id, created_at, mtime_ns"


def document_of(row: Row) -> Document:
    """A row of DOC_COLUMNS as a Document."""
    return Document(*row)


def value_rows(width: int, count: int) -> str:
    """Placeholders for `count` rows of `width` values, for a VALUES list."""
    row = "(" + ", ".join("?" for _ in range(width)) + ")"
    return ", ".join(row for _ in range(count))


def live_at(moment: str, row: str = "d") -> str:
    """SQL: the version `row` was the live one at `moment` (a placeholder or a
    column): the one definition of "live then", for time travel and snapshots."""
    return f"{row}.valid_from <= {moment} AND ({row}.valid_to IS NULL OR {row}.valid_to > {moment})"


# Blob `b` is used by a version live at some snapshot's moment (gc keeps it).
PINNED_BY_SNAPSHOTS = ("EXISTS (SELECT 1 FROM documents d JOIN snapshots s ON "
                       f"{live_at('s.at')} WHERE d.sha256 = b.sha256)")

# The virtual path of a document, joined from its artifact and resolver directories.
_FOUND = (f"SELECT {_D_COLUMNS}, '/' || r.name || '/' || a.name || '/' || d.basename "
          "FROM documents d "
          "JOIN directories a ON a.resolver = d.resolver AND a.artifact_id = d.artifact_id "
          "JOIN directories r ON r.ino = a.parent_ino "
          "WHERE d.valid_to IS NULL")


class SqlQueries:
    db: Database
    _past: PastQueries | None  # the moment shown (SqlCatalog.show_at), None for now
    path_at: Callable[[str, str, str], str]

    def search(self, query: DocumentFilter) -> Iterator[Found]:
        """Live documents that pass every filter of `query`, oldest first (those
        live at the moment shown, under the paths they had then, on a past view)."""
        clauses, args = _where(query, self.db.dialect)
        if self._past is not None:
            yield from self._search_past(self._past.at, clauses, args, query.limit)
            return
        sql = _FOUND + "".join(f" AND {c}" for c in clauses) + " ORDER BY d.id"
        if query.limit is not None:
            sql += " LIMIT ?"
            args.append(query.limit)
        for row in self.db.stream(sql, args):
            yield Found(Document(*row[:-1]), row[-1])

    def _search_past(self, at: float, clauses: list[str], args: list[Any],
                     limit: int | None) -> Iterator[Found]:
        sql = (f"SELECT {_D_COLUMNS} FROM documents d WHERE {live_at('?')}"
               + "".join(f" AND {c}" for c in clauses) + " ORDER BY d.id")
        args = [at, at, *args]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        # Rows first, then their paths (the directories of then, asked once per
        # artifact): no query may run on the connection while a stream is open.
        places: dict[tuple[str, str], str] = {}
        for doc in [Document(*row) for row in self.db.rows(sql, args)]:
            key = (doc.resolver, doc.artifact_id)
            if key not in places:
                places[key] = self.path_at(doc.resolver, doc.artifact_id, "")
            yield Found(doc, places[key] + doc.basename)

    def blobs_to_verify(self, *, sample: float | None = None,
                        limit: int | None = None) -> Iterator[tuple[str, int]]:
        """(sha256, bytes) of blobs believed present, least recently verified first
        (never verified ones before all others); `sample` keeps about that fraction."""
        sql = "SELECT sha256, bytes FROM blobs WHERE state = 'present'"
        args: list[Any] = []
        if sample is not None:
            sql += f" AND {self.db.dialect.random_fraction} < ?"
            args.append(sample)
        sql += " ORDER BY last_verified_at NULLS FIRST, sha256"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for sha256, size in self.db.stream(sql, args):
            yield sha256, int(size)

    def garbage_blobs(self, policy: GcPolicy, now: float, after: str, limit: int
                      ) -> list[tuple[str, int, float, LastUse | None]]:
        """(sha256, bytes, first_seen, where the record that last used it was) for
        the next `limit` blobs after `after` that no kept record references; a list,
        so the read is over when it returns."""
        sql, args = _garbage_sql(policy, one=False, json_array=self.db.dialect.json_array)
        rows = self.db.rows(sql, [*args(now), after, limit])
        return [(sha, int(size), first_seen, _last_use(last))
                for sha, size, first_seen, last in rows]

    def kept_by_snapshots(self, policy: GcPolicy, now: float) -> list[tuple[str, int, int]]:
        """(snapshot, blobs, bytes): what each snapshot keeps that the retention
        policy alone would let gc delete (a blob two snapshots use counts in both)."""
        conditions, args = _garbage_conditions(policy)
        rows = self.db.rows(
            "SELECT s.name, count(*), coalesce(sum(b.bytes), 0) FROM snapshots s "
            "JOIN blobs b ON EXISTS (SELECT 1 FROM documents d WHERE d.sha256 = b.sha256 "
            f"AND {live_at('s.at')}) "
            f"WHERE {conditions} GROUP BY s.name ORDER BY s.name", args(now))
        return [(name, int(blobs), int(size)) for name, blobs, size in rows]

    def is_garbage(self, sha256: str, policy: GcPolicy, now: float) -> bool:
        sql, args = _garbage_sql(policy, one=True, json_array=self.db.dialect.json_array)
        return self.db.one(sql, [*args(now), sha256]) is not None

    # -- fsck ------------------------------------------------------------------
    def live_blob_usage(self) -> Iterator[BlobUsage]:
        for sha, state, doc_bytes, blob_bytes, count, ino in self.db.stream(
                "SELECT d.sha256, b.state, d.bytes, b.bytes, count(*), min(d.ino) "
                "FROM documents d JOIN blobs b USING (sha256) WHERE d.valid_to IS NULL "
                "GROUP BY d.sha256, b.state, d.bytes, b.bytes"):
            yield BlobUsage(sha, state, int(doc_bytes), int(blob_bytes), int(count), int(ino))

    def records_without_directory(self) -> Iterator[Document]:
        for row in self.db.stream(
                f"SELECT {_D_COLUMNS} FROM documents d WHERE d.valid_to IS NULL AND NOT "
                "EXISTS (SELECT 1 FROM directories a WHERE a.resolver = d.resolver "
                "AND a.artifact_id = d.artifact_id)"):
            yield Document(*row)

    def path_collisions(self) -> Iterator[tuple[str, int]]:
        for resolver, artifact_id, basename, count in self.db.rows(
                "SELECT resolver, artifact_id, basename, count(*) FROM documents "
                "WHERE valid_to IS NULL GROUP BY 1, 2, 3 HAVING count(*) > 1"):
            yield f"/{resolver}/{artifact_id}/{basename}", int(count)

    def blob_sizes_with_prefix(self, prefix: str) -> dict[str, int]:
        """{sha256: bytes} of the blobs (not deleted) whose hash starts with `prefix`."""
        return {sha: int(size) for sha, size in self.db.rows(
            "SELECT sha256, bytes FROM blobs WHERE sha256 >= ? AND sha256 < ? "
            "AND state != 'deleted'", (prefix, prefix + "g"))}

    def blob_state(self, sha256: str) -> str:
        row = self.db.one("SELECT state FROM blobs WHERE sha256 = ?", (sha256,))
        return "absent" if row is None else str(row[0])

    def live_hashes_by_key(self, keys: list[tuple[str, str, str]]
                           ) -> dict[tuple[str, str, str], str]:
        """{(artifact_id, source_url, resolver): sha256} of the keys that are live."""
        if not keys:
            return {}
        rows = self.db.rows(
            "SELECT artifact_id, source_url, resolver, sha256 FROM documents WHERE valid_to "
            "IS NULL AND (artifact_id, source_url, resolver) IN "
            f"(VALUES {value_rows(3, len(keys))})",
            [part for key in keys for part in key])
        return {(a, u, r): sha for a, u, r, sha in rows}

    def blob_size(self, sha256: str) -> int | None:
        row = self.db.one("SELECT bytes FROM blobs WHERE sha256 = ?", (sha256,))
        return None if row is None else int(row[0])

    def blobs_to_verify_bytes(self) -> int:
        row = self.db.one("SELECT CAST(coalesce(sum(bytes), 0) AS BIGINT) FROM blobs "
                          "WHERE state = 'present'")
        return 0 if row is None else int(row[0])

    def last_at_path(self, resolver: str, artifact_id: str, basename: str) -> Document | None:
        """The newest version, live or closed, that was ever at this place."""
        row = self.db.one(
            f"SELECT {DOC_COLUMNS} FROM documents WHERE resolver = ? AND artifact_id = ? "
            "AND basename = ? ORDER BY valid_to IS NOT NULL, valid_from DESC, id DESC "
            "LIMIT 1", (resolver, artifact_id, basename))
        return None if row is None else Document(*row)

    def blobs_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Stored hashes that start with `prefix` (lowercase hex), at most `limit`."""
        rows = self.db.rows("SELECT sha256 FROM blobs WHERE sha256 >= ? AND sha256 < ? "
                            "ORDER BY sha256 LIMIT ?", (prefix, prefix + "g", limit))
        return [r[0] for r in rows]

    def duplicate_groups(self, top: int) -> list[DuplicateGroup]:
        """The `top` blobs shared by most bytes saved, with the paths that share them."""
        rows = self.db.rows(
            "SELECT sha256, max(bytes), count(*) FROM documents "
            "WHERE valid_to IS NULL GROUP BY sha256 HAVING count(*) > 1 "
            "ORDER BY (count(*) - 1) * max(bytes) DESC, sha256 LIMIT ?", (top,))
        return [DuplicateGroup(sha, int(size), int(refs),
                               [f.path for f in self.search(DocumentFilter(sha256=sha))])
                for sha, size, refs in rows]

    def savings_by_resolver(self) -> list[dict[str, Any]]:
        """Per resolver: documents, logical bytes, and the bytes dedup saved, each shared
        blob's saving split evenly among the documents that share it."""
        rows = self.db.rows(
            "WITH refs AS (SELECT sha256, count(*) AS n FROM documents "
            "              WHERE valid_to IS NULL GROUP BY sha256) "
            "SELECT d.resolver, count(*), sum(d.bytes), "
            "       CAST(round(sum(d.bytes * (refs.n - 1.0) / refs.n)) AS BIGINT) "
            "FROM documents d JOIN refs USING (sha256) WHERE d.valid_to IS NULL "
            "GROUP BY d.resolver ORDER BY 4 DESC, d.resolver")
        return [{"resolver": r, "documents": int(n), "logical_bytes": int(logical),
                 "saved_bytes": int(saved)} for r, n, logical, saved in rows]

    def content_type_conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """Blobs registered under more than one content type: worth a look."""
        listed = self.db.dialect.distinct_list("coalesce(content_type, '(none)')")
        rows = self.db.rows(
            f"SELECT sha256, {listed} "
            "FROM documents WHERE valid_to IS NULL GROUP BY sha256 "
            "HAVING count(DISTINCT coalesce(content_type, '')) > 1 ORDER BY sha256 LIMIT ?",
            (limit,))
        return [{"sha256": sha, "content_types": sorted(types.split(","))}
                for sha, types in rows]


def _garbage_conditions(policy: GcPolicy) -> tuple[str, Callable[[float], list[Any]]]:
    """What makes blob `b` garbage by the retention policy (snapshots aside), and a
    function from `now` to its parameters. A documents row keeps its blob while it is
    live or closed for less than its retention window: the first matching rule's,
    else the default."""
    window = "CASE"
    rule_args: list[Any] = []
    for rule in policy.rules:
        tests = []
        if rule.resolver is not None:
            tests.append("d.resolver = ?")
            rule_args.append(rule.resolver)
        if rule.content_type is not None:
            tests.append("d.content_type = ?")
            rule_args.append(rule.content_type)
        window += f" WHEN {' AND '.join(tests)} THEN ?"
        rule_args.append(rule.keep_history)
    window = f"{window} ELSE ? END" if policy.rules else "?"
    kept = f"(d.valid_to IS NULL OR d.valid_to > ? - {window})"
    conditions = ("b.state != 'deleted' AND b.first_seen < ? - ? "
                  f"AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.sha256 = b.sha256 "
                  f"AND {kept}) "
                  "AND NOT EXISTS (SELECT 1 FROM variants v WHERE v.sha256 = b.sha256)")

    def args(now: float) -> list[Any]:
        return [now, policy.grace, now, *rule_args, policy.keep_history]
    return conditions, args


def _garbage_sql(policy: GcPolicy, one: bool, json_array: str
                 ) -> tuple[str, Callable[[float], list[Any]]]:
    """The query for garbage blobs (or for whether one is garbage: a last parameter,
    the hash; else two, the hash to start after and the page size), and a function
    from `now` to its first parameters: garbage by the policy, and in no snapshot."""
    conditions, args = _garbage_conditions(policy)
    sql = (f"SELECT b.sha256, b.bytes, b.first_seen, "
           f" (SELECT {json_array}(d.resolver, d.artifact_id, d.basename, d.valid_to) "
           "  FROM documents d WHERE d.sha256 = b.sha256 "
           "  ORDER BY d.valid_to DESC LIMIT 1) "  # garbage has no live row: no NULLs
           f"FROM blobs b WHERE {conditions} AND NOT {PINNED_BY_SNAPSHOTS} ")
    sql += "AND b.sha256 = ?" if one else "AND b.sha256 > ? ORDER BY b.sha256 LIMIT ?"
    return sql, args


def _last_use(value: Any) -> LastUse | None:
    """The record that last used a blob, from its JSON array (text or parsed)."""
    if value is None:
        return None
    resolver, artifact_id, basename, valid_to = (
        json.loads(value) if isinstance(value, str) else value)
    return LastUse(resolver, artifact_id, basename, valid_to)


def _where(query: DocumentFilter, dialect: Dialect) -> tuple[list[str], list[Any]]:
    glob = query.artifact_glob
    conditions: list[tuple[str, Any]] = [
        ("d.resolver = ?", query.resolver),
        ("d.content_type = ?", query.content_type),
        (dialect.glob("d.artifact_id"), None if glob is None else dialect.glob_argument(glob)),
        (dialect.contains("d.source_url"), query.url_substring),
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
