"""The embedded catalog: SQLite through APSW, one file in the store (`catalog.db`)."""

from casfs.catalog.sqlite.catalog import SqliteCatalog

__all__ = ["SqliteCatalog"]
