"""The directory tree's rules, a mixin of SqlCatalog: depth 1 holds resolvers and
depth 2 their artifacts, each named once (a collision gets a name derived from its
identifier); a rename moves the documents beneath as new versions; every earlier
state of a directory stays in `directory_history`; one function formats a virtual
path."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from casfs import naming
from casfs.catalog import ROOT_INO
from casfs.catalog.changes import Change, DirectoryChange
from casfs.catalog.database import Database, Row
from casfs.catalog.past import PastQueries
from casfs.catalog.sql_queries import DIR_COLUMNS, DOC_COLUMNS, value_rows
from casfs.errors import Conflict, NotFound
from casfs.records import Directory, Document

_LIVE = "valid_to IS NULL"
T = TypeVar("T")


def _dir(row: Row) -> Directory:
    return Directory(*row)


class SqlDirectories:
    db: Database
    _past: PastQueries | None
    _changes: list[Change]
    _directories_seen: dict[tuple[str, str | None], Directory]

    # provided by SqlCatalog
    def _write(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _retrying(self, change: Callable[[], T]) -> T:
        raise NotImplementedError

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        raise NotImplementedError

    def take_ino(self) -> int:
        raise NotImplementedError

    def _close(self, ino: int, change: str) -> None:
        raise NotImplementedError

    def _insert_version(self, previous: Document, **changes: Any) -> Document:
        raise NotImplementedError

    def get_directory(self, ino: int) -> Directory | None:
        if self._past:
            return self._past.get_directory(ino)
        row = self._one(f"SELECT {DIR_COLUMNS} FROM directories WHERE ino = ?", (ino,))
        return _dir(row) if row else None

    def lookup_directory(self, parent_ino: int, name: str) -> Directory | None:
        if self._past:
            return self._past.lookup_directory(parent_ino, name)
        row = self._one(f"SELECT {DIR_COLUMNS} FROM directories "
                        "WHERE parent_ino = ? AND name = ?", (parent_ino, name))
        return _dir(row) if row else None

    def list_directories(self, parent_ino: int, after_ino: int, limit: int) -> list[Directory]:
        if self._past:
            return self._past.list_directories(parent_ino, after_ino, limit)
        rows = self.db.rows(
            f"SELECT {DIR_COLUMNS} FROM directories WHERE parent_ino = ? AND ino > ? "
            "ORDER BY ino LIMIT ?", (parent_ino, after_ino, limit))
        return [_dir(r) for r in rows]

    def find_directory(self, resolver: str, artifact_id: str | None) -> Directory | None:
        if self._past:
            return self._past.find_directory(resolver, artifact_id)
        if artifact_id is None:  # `IS ?` would keep PostgreSQL from using the index
            row = self._one(f"SELECT {DIR_COLUMNS} FROM directories "
                            "WHERE resolver = ? AND artifact_id IS NULL", (resolver,))
        else:
            row = self._one(f"SELECT {DIR_COLUMNS} FROM directories "
                            "WHERE resolver = ? AND artifact_id = ?", (resolver, artifact_id))
        return _dir(row) if row else None

    def _insert_directory(self, parent_ino: int, name: str, resolver: str,
                          artifact_id: str | None) -> Directory:
        now = time.time()
        made = Directory(self.take_ino(), parent_ino, name, resolver, artifact_id, now,
                         int(now * 1e9))
        self._insert_directories([made])
        return made

    def _insert_directories(self, made: list[Directory]) -> None:
        """Insert new directories (each its first version), in one statement."""
        self.db.execute(
            "INSERT INTO directories (ino, parent_ino, name, resolver, artifact_id, "
            f"created_at, mtime_ns, valid_from) VALUES {value_rows(8, len(made))}",
            [v for d in made for v in (d.ino, d.parent_ino, d.name, d.resolver,
                                       d.artifact_id, d.created_at, d.mtime_ns,
                                       d.created_at)])
        self._changes += [DirectoryChange(d.ino, d.parent_ino, d.name) for d in made]

    def _ensure_directory(self, resolver: str, artifact_id: str | None) -> Directory:
        """find_directory or create it, inside a write transaction."""
        key = (resolver, artifact_id)
        if key in self._directories_seen:
            return self._directories_seen[key]
        found = self.find_directory(resolver, artifact_id)
        if found:
            self._directories_seen[key] = found
            return found
        if artifact_id is None:
            parent_ino, identifier = ROOT_INO, resolver
        else:
            parent_ino, identifier = self._ensure_directory(resolver, None).ino, artifact_id
        name = naming.dir_name_for(identifier)
        if self.lookup_directory(parent_ino, name) is not None:
            name = naming.collision_name(name, identifier)
        created = self._insert_directory(parent_ino, name, resolver, artifact_id)
        self._directories_seen[key] = created
        return created

    def _ensure_artifact_directories(self, keys: set[tuple[str, str]]) -> None:
        """`_ensure_directory` for many (resolver, artifact_id), inside a write
        transaction, in a few statements whatever their number (an import makes a
        directory for nearly every document): the ones that exist are found in one
        query, the new ones whose plain name is free go in with one statement, and
        the rest (a name taken) are made one by one."""
        wanted = sorted(key for key in keys if key not in self._directories_seen)
        if not wanted:
            return
        for row in self.db.rows(
                f"SELECT {DIR_COLUMNS} FROM directories WHERE artifact_id IS NOT NULL AND "
                f"(resolver, artifact_id) IN (VALUES {value_rows(2, len(wanted))})",
                [part for key in wanted for part in key]):
            found = _dir(row)
            assert found.artifact_id is not None
            self._directories_seen[(found.resolver, found.artifact_id)] = found
        missing = [(resolver, artifact_id, self._ensure_directory(resolver, None).ino,
                    naming.dir_name_for(artifact_id))
                   for resolver, artifact_id in wanted
                   if (resolver, artifact_id) not in self._directories_seen]
        if not missing:
            return
        taken = {(parent, name) for parent, name in self.db.rows(
            "SELECT parent_ino, name FROM directories WHERE (parent_ino, name) IN "
            f"(VALUES {value_rows(2, len(missing))})",
            [part for _, _, parent, name in missing for part in (parent, name)])}
        names = Counter((parent, name) for _, _, parent, name in missing)
        now = time.time()
        free = [Directory(self.take_ino(), parent, name, resolver, artifact_id, now,
                          int(now * 1e9))
                for resolver, artifact_id, parent, name in missing
                if (parent, name) not in taken and names[(parent, name)] == 1]
        if free:
            self._insert_directories(free)
        for made in free:
            assert made.artifact_id is not None
            self._directories_seen[(made.resolver, made.artifact_id)] = made
        for resolver, artifact_id, _, _ in missing:  # a name taken: one by one, in order
            self._ensure_directory(resolver, artifact_id)

    def ensure_directory(self, resolver: str, artifact_id: str | None) -> Directory:
        found = self.find_directory(resolver, artifact_id)
        if found:
            return found

        def change() -> Directory:
            with self._write():
                return self._ensure_directory(resolver, artifact_id)
        return self._retrying(change)

    def make_directory(self, parent_ino: int, name: str) -> Directory:
        identifier = naming.identifier_for_dir_name(name)
        with self._write():
            if self.lookup_directory(parent_ino, name) is not None:
                raise Conflict(f"directory {name!r} exists")
            if parent_ino == ROOT_INO:
                resolver, artifact_id = identifier, None
            else:
                parent = self.get_directory(parent_ino)
                if parent is None or parent.artifact_id is not None:
                    raise NotFound("directories exist only at depth 1 and 2")
                resolver, artifact_id = parent.resolver, identifier
            if self.find_directory(resolver, artifact_id) is not None:
                raise Conflict(f"{identifier!r} already has a directory")
            return self._insert_directory(parent_ino, name, resolver, artifact_id)

    def remove_directory(self, ino: int) -> None:
        with self._write():
            directory = self.get_directory(ino)
            if directory is None:
                raise NotFound(f"no directory {ino}")
            if self.list_directories(ino, 0, 1) or self._has_documents(directory):
                raise Conflict(f"directory {directory.name!r} is not empty")
            self._archive_directory(ino, "rmdir", time.time())
            self.db.execute("DELETE FROM directories WHERE ino = ?", (ino,))
            self._changes.append(DirectoryChange(ino, directory.parent_ino, directory.name))

    def _archive_directory(self, ino: int, change: str, now: float) -> None:
        """Keep the directory's present state in its history, ended now by `change`
        (inside a write transaction, before the row changes)."""
        self.db.execute(
            "INSERT INTO directory_history (ino, parent_ino, name, resolver, artifact_id, "
            "created_at, mtime_ns, valid_from, valid_to, change) SELECT ino, parent_ino, "
            "name, resolver, artifact_id, created_at, mtime_ns, valid_from, ?, ? "
            "FROM directories WHERE ino = ?", (now, change, ino))

    def _has_documents(self, directory: Directory) -> bool:
        return self._one(f"SELECT 1 FROM documents WHERE {_LIVE} AND resolver = ? "
                         "AND artifact_id = ? LIMIT 1",
                         (directory.resolver, directory.artifact_id)) is not None

    def rename_directory(self, ino: int, new_parent_ino: int, new_name: str) -> None:
        """Rename or move a directory; its documents follow as new versions."""
        with self._write():
            directory = self.get_directory(ino)
            if directory is None:
                raise NotFound(f"no directory {ino}")
            if self.lookup_directory(new_parent_ino, new_name) is not None:
                raise Conflict(f"directory {new_name!r} exists")
            identifier = naming.identifier_for_dir_name(new_name)
            if directory.artifact_id is None:
                if new_parent_ino != ROOT_INO:
                    raise NotFound("a resolver directory stays at depth 1")
                moves = [(directory, identifier, None)] + [
                    (child, identifier, child.artifact_id)
                    for child in self._all_children(ino)]
            else:
                parent = self.get_directory(new_parent_ino)
                if parent is None or parent.artifact_id is not None:
                    raise NotFound("an artifact directory stays at depth 2")
                moves = [(directory, parent.resolver, identifier)]
            for old, resolver, artifact_id in moves:
                if (old.resolver, old.artifact_id) != (resolver, artifact_id) and \
                        self.find_directory(resolver, artifact_id) is not None:
                    raise Conflict(f"{resolver}/{artifact_id or ''} already has a directory")
            now = time.time()
            for old in {ino: directory, **{old.ino: old for old, *_ in moves}}.values():
                self._archive_directory(old.ino, "rename", now)
            self.db.execute("UPDATE directories SET parent_ino = ?, name = ?, valid_from = ? "
                            "WHERE ino = ?", (new_parent_ino, new_name, now, ino))
            self._changes += [DirectoryChange(ino, directory.parent_ino, directory.name),
                              DirectoryChange(ino, new_parent_ino, new_name)]
            for old, resolver, artifact_id in moves:
                self.db.execute(
                    "UPDATE directories SET resolver = ?, artifact_id = ?, valid_from = ? "
                    "WHERE ino = ?", (resolver, artifact_id, now, old.ino))
                if old.artifact_id is not None and artifact_id is not None:
                    self._move_documents(old, resolver, artifact_id)

    def _all_children(self, ino: int) -> list[Directory]:
        rows = self.db.rows(f"SELECT {DIR_COLUMNS} FROM directories "
                                 "WHERE parent_ino = ?", (ino,))
        return [_dir(r) for r in rows]

    def _move_documents(self, old: Directory, resolver: str, artifact_id: str) -> None:
        rows = list(self.db.rows(
            f"SELECT {DOC_COLUMNS} FROM documents WHERE {_LIVE} AND resolver = ? "
            "AND artifact_id = ?", (old.resolver, old.artifact_id)))
        for doc in (Document(*row) for row in rows):
            self._close(doc.ino, "rename")
            self._insert_version(doc, resolver=resolver, artifact_id=artifact_id)

    def directory_of(self, doc: Document) -> Directory:
        found = self.find_directory(doc.resolver, doc.artifact_id)
        if found is None:
            raise NotFound(f"no directory for {doc.resolver}/{doc.artifact_id}")
        return found

    def virtual_path(self, doc: Document) -> str:
        return self.path_at(doc.resolver, doc.artifact_id, doc.basename)

    def path_at(self, resolver: str, artifact_id: str, basename: str) -> str:
        """The one formatter of a virtual path: /<resolver dir>/<artifact dir>/<name>
        with the directories' names as the mount shows them; for a place whose
        directories are gone (history), the names they would get."""
        artifact_dir = self.find_directory(resolver, artifact_id)
        resolver_dir = self.get_directory(artifact_dir.parent_ino) if artifact_dir \
            else self.find_directory(resolver, None)
        return "/".join(("", resolver_dir.name if resolver_dir else naming.dir_name_for(resolver),
                         artifact_dir.name if artifact_dir else naming.dir_name_for(artifact_id),
                         basename))
