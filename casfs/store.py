"""A store directory: its layout on disk, and opening or creating one.

    <store>/
      catalog.db         the catalog (APSW/SQLite, WAL)
      cas/sha256/ab/...  blobs, named by hash
      tmp/               staging for writes and imports (same filesystem as cas/)
      quarantine/        blobs whose bytes no longer match their name
      run/               pid files of running mounts
      log/               mount logs
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import apsw

from casfs.blobstore import LocalBlobStore
from casfs.errors import StoreError
from casfs.sqlite_catalog import SqliteCatalog

CATALOG_FILE = "catalog.db"
SUBDIRS = ("cas/sha256", "tmp", "quarantine", "run", "log")


@dataclass(frozen=True)
class StoreLayout:
    root: Path

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG_FILE

    @property
    def cas(self) -> Path:
        return self.root / "cas"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"


class Store:
    """An open store: its catalog and its blobs. Close it when done."""

    def __init__(self, layout: StoreLayout, catalog: SqliteCatalog,
                 blobs: LocalBlobStore) -> None:
        self.layout = layout
        self.catalog = catalog
        self.blobs = blobs

    @classmethod
    def init(cls, root: Path) -> Store:
        """Create a store at `root` (or open the one that is there)."""
        layout = StoreLayout(root.absolute())
        try:
            for sub in SUBDIRS:
                (layout.root / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(layout.root, 0o755)
        except OSError as e:
            raise StoreError(f"cannot create a store at {root}: {e.strerror}") from None
        SqliteCatalog(layout.catalog).close()
        return cls.open(root)

    @classmethod
    def open(cls, root: Path, *, readonly: bool = False) -> Store:
        try:
            return cls._open(root, readonly)
        except OSError as e:
            raise StoreError(f"cannot open the store at {root}: {e.strerror or e}") from None
        except apsw.Error as e:
            raise StoreError(f"cannot open the catalog of {root}: {e}") from None

    @classmethod
    def _open(cls, root: Path, readonly: bool) -> Store:
        layout = StoreLayout(root.absolute())
        if not layout.catalog.is_file():
            raise StoreError(f"no casfs store at {root} (run 'casfs init' to create one)")
        for sub in SUBDIRS:
            if not (layout.root / sub).is_dir():
                raise StoreError(f"store {root} is damaged: {sub}/ is missing")
        if not readonly and not os.access(layout.tmp, os.W_OK):
            raise StoreError(f"store {root} is not writable (tmp/)")
        catalog = SqliteCatalog(layout.catalog, readonly=readonly)
        return cls(layout, catalog, LocalBlobStore(layout.cas, layout.tmp))

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
