"""The shared catalog: PostgreSQL through psycopg 3, for any number of hosts."""

from casfs.catalog.postgres.catalog import PostgresCatalog

__all__ = ["PostgresCatalog"]
