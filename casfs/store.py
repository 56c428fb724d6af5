"""A store directory: its layout on disk, and opening or creating one.

    <store>/
      store.toml         where the catalog and the blobs are, when not here (optional)
      catalog.db         the catalog (APSW/SQLite, WAL), unless store.toml names another
      cas/sha256/ab/...  blobs, named by hash
      tmp/               staging for writes and imports (same filesystem as cas/)
      quarantine/        blobs whose bytes no longer match their name
      run/               pid files of running mounts
      log/               mount logs

A store that several hosts share has one such directory on each host (its staging,
logs and pid files are the host's own) whose `store.toml` names the shared catalog,
`catalog = "postgresql://USER@HOST/DB"`. No password is ever written there: libpq
takes it from PGPASSWORD, ~/.pgpass or PGPASSFILE.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import tomli_w

from casfs.blobs import BlobStore, file_url, open_blobs
from casfs.catalog import Catalog, open_catalog, sqlite_url
from casfs.errors import CasfsError, StoreError

CATALOG_FILE = "catalog.db"
STORE_FILE = "store.toml"
SUBDIRS = ("cas/sha256", "tmp", "quarantine", "run", "log")


@dataclass(frozen=True)
class StoreLayout:
    root: Path

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG_FILE

    @property
    def store_file(self) -> Path:
        return self.root / STORE_FILE

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


@dataclass(frozen=True)
class Locations:
    """Where a store's catalog and blobs are (URLs): store.toml's, else in the store."""

    catalog: str
    blobs: str

    @classmethod
    def default(cls, layout: StoreLayout) -> Locations:
        return cls(sqlite_url(layout.catalog), file_url(layout.root))

    @classmethod
    def read(cls, layout: StoreLayout) -> Locations:
        default = cls.default(layout)
        if not layout.store_file.is_file():
            return default
        try:
            values = tomllib.loads(layout.store_file.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise StoreError(f"{layout.store_file}: {e}") from None
        found = {key: values.get(key, getattr(default, key)) for key in ("catalog", "blobs")}
        for key, value in found.items():
            if not isinstance(value, str):
                raise StoreError(f"{layout.store_file}: {key} must be a URL string")
        unknown = set(values) - set(found)
        if unknown:
            raise StoreError(f"{layout.store_file}: unknown key {sorted(unknown)[0]!r}")
        return cls(**found)

    def check(self) -> None:
        if urlsplit(self.catalog).password:
            raise StoreError("a catalog URL with a password is never written to the config: "
                             "give the password in PGPASSWORD, ~/.pgpass or PGPASSFILE")

    def write(self, layout: StoreLayout) -> None:
        self.check()
        default = self.default(layout)
        values = {key: getattr(self, key) for key in ("catalog", "blobs")
                  if getattr(self, key) != getattr(default, key)}
        if not values:
            layout.store_file.unlink(missing_ok=True)
            return
        partial = layout.store_file.with_suffix(".toml.part")
        partial.write_text(tomli_w.dumps(values))
        os.replace(partial, layout.store_file)


class Store:
    """An open store: its catalog and its blobs. Close it when done."""

    def __init__(self, layout: StoreLayout, locations: Locations, catalog: Catalog,
                 blobs: BlobStore, *, readonly: bool = False,
                 answer_within: float | None = None) -> None:
        self.layout = layout
        self.locations = locations
        self.catalog = catalog
        self.blobs = blobs
        self.readonly = readonly
        self.answer_within = answer_within  # seconds a catalog server may take (open_catalog)
        self.at: float | None = None  # the moment shown (time travel), None for now

    @classmethod
    def init(cls, root: Path, *, catalog: str | None = None, blobs: str | None = None
             ) -> Store:
        """Create a store at `root` (or open the one that is there); with `catalog`
        and `blobs` (URLs), this host's part of a store whose catalog and blobs are
        there (the catalog's schema is made if its database is empty)."""
        layout = StoreLayout(root.absolute())
        if catalog:
            Locations(catalog, "").check()  # before anything is made
        try:
            for sub in SUBDIRS:
                (layout.root / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(layout.root, 0o755)
        except OSError as e:
            raise StoreError(f"cannot create a store at {root}: {e.strerror}") from None
        known = Locations.read(layout)
        locations = Locations(catalog or known.catalog, blobs or known.blobs)
        open_blobs(locations.blobs, layout.root)
        open_catalog(locations.catalog).close()  # creates or migrates the schema
        locations.write(layout)
        return cls.open(root)

    @classmethod
    def open(cls, root: Path, *, readonly: bool = False,
             answer_within: float | None = None) -> Store:
        """The store at `root`. `answer_within` bounds every wait for a catalog
        server, on every connection opened from it (see `open_catalog`)."""
        try:
            return cls._open(root, readonly, answer_within)
        except OSError as e:
            raise StoreError(f"cannot open the store at {root}: {e.strerror or e}") from None
        except CasfsError as e:
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open the catalog of {root}: {e}") from None

    def open_catalog(self, *, readonly: bool | None = None) -> Catalog:
        """Another connection to this store's catalog (for another thread), showing
        the same moment as the store."""
        catalog = open_catalog(self.locations.catalog,
                               readonly=self.readonly if readonly is None else readonly,
                               answer_within=self.answer_within)
        if self.at is not None:
            catalog.show_at(self.at)
        return catalog

    def show_at(self, moment: float) -> None:
        """Time travel: show the tree as it was at `moment`, on this store's catalog
        and every connection opened from it after; writes are refused."""
        self.at = moment
        self.catalog.show_at(moment)

    @classmethod
    def _open(cls, root: Path, readonly: bool, answer_within: float | None) -> Store:
        layout = StoreLayout(root.absolute())
        locations = Locations.read(layout)
        if not layout.catalog.is_file() and not layout.store_file.is_file():
            raise StoreError(f"no casfs store at {root} (run 'casfs init' to create one)")
        for sub in SUBDIRS:
            if not (layout.root / sub).is_dir():
                raise StoreError(f"store {root} is damaged: {sub}/ is missing")
        if not readonly and not os.access(layout.tmp, os.W_OK):
            raise StoreError(f"store {root} is not writable (tmp/)")
        catalog = open_catalog(locations.catalog, readonly=readonly,
                               answer_within=answer_within)
        try:
            blobs = open_blobs(locations.blobs, layout.root)
        except BaseException:
            catalog.close()
            raise
        return cls(layout, locations, catalog, blobs, readonly=readonly,
                   answer_within=answer_within)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
