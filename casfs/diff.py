"""What changed between two moments of the store (`casfs diff A B`).

A document keeps its inode through overwrites and renames, so two moments are
compared inode by inode: an inode live only at the first was removed, only at the
second added; live at both, it was renamed when its path differs and changed when
its bytes do (both at once is a rename with a change). Each side is read in pages
in inode order and merged, so a diff of millions of documents holds one page of
each side in memory; paths are those of each moment (`Catalog.path_at` on a
catalog showing it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from casfs.catalog import Catalog
from casfs.records import Document

PAGE = 2000
Kind = Literal["added", "removed", "changed", "renamed"]


@dataclass(frozen=True, slots=True)
class Difference:
    kind: Kind
    ino: int
    path: str  # at the second moment; at the first for a removal
    old_path: str | None  # at the first moment (None when added)
    sha256: str | None  # at the second moment (None when removed)
    old_sha256: str | None  # at the first moment (None when added)

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "ino": self.ino, "path": self.path,
                "old_path": self.old_path, "sha256": self.sha256,
                "old_sha256": self.old_sha256}


def _pages(catalog: Catalog) -> Iterator[Document]:
    after = 0
    while page := catalog.documents_by_ino(after, PAGE):
        yield from page
        after = page[-1].ino


def differences(first: Catalog, second: Catalog) -> Iterator[Difference]:
    """What changed from the moment `first` shows to the one `second` shows, in
    inode order."""
    places: dict[tuple[int, str, str], str] = {}  # artifact directory paths, asked once

    def path(catalog: Catalog, doc: Document) -> str:
        key = (id(catalog), doc.resolver, doc.artifact_id)
        if key not in places:
            places[key] = catalog.path_at(doc.resolver, doc.artifact_id, "")
        return places[key] + doc.basename

    old_docs, new_docs = _pages(first), _pages(second)
    old, new = next(old_docs, None), next(new_docs, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old.ino < new.ino):
            assert old is not None
            gone = path(first, old)
            yield Difference("removed", old.ino, gone, gone, None, old.sha256)
            old = next(old_docs, None)
        elif old is None or new.ino < old.ino:
            yield Difference("added", new.ino, path(second, new), None, new.sha256, None)
            new = next(new_docs, None)
        else:
            old_path, new_path = path(first, old), path(second, new)
            if old_path != new_path:
                yield Difference("renamed", new.ino, new_path, old_path, new.sha256,
                                 old.sha256)
            elif old.sha256 != new.sha256:
                yield Difference("changed", new.ino, new_path, old_path, new.sha256,
                                 old.sha256)
            old, new = next(old_docs, None), next(new_docs, None)
