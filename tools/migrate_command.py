"""`casfs migrate --catalog URL`: move a store's SQLite catalog into PostgreSQL.

Preview by default (what would be copied, and whether the target is empty);
`--apply` copies in one PostgreSQL transaction, checks the copy, and only then
switches the store to it (store.toml). A move that is killed leaves the store on
its SQLite catalog and the target empty; running it again completes it. The
SQLite catalog file stays where it was, untouched, for going back.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from casfs.catalog.sql_catalog import SqlCatalog
from casfs.errors import CasfsError
from casfs.processes import running_mounts
from casfs.store import Locations

from .output import print_json
from .progress import ProgressLine

if TYPE_CHECKING:
    from .context import Context


def register(commands: Any) -> None:
    p = commands.add_parser(
        "migrate", help="move the store's catalog into PostgreSQL",
        description="Copy the store's SQLite catalog (documents with their history, "
                    "directories, the blob ledger, counters) into an empty PostgreSQL "
                    "database, check the copy (row counts, counters, a sample of "
                    "documents), and switch the store to it. Without --apply, only "
                    "says what it would do. Stop the store's mounts first.",
        epilog="Then give every other host its part of the store with 'casfs --store DIR "
               "init --catalog URL --blobs file:///SHARED'. Exit codes: 0 done (or "
               "previewed), 2 refused (mounted, a non-empty target, a failed check).")
    p.add_argument("--catalog", metavar="URL", required=True,
                   help="postgresql://USER@HOST[:PORT]/DB, an empty database")
    p.add_argument("--apply", action="store_true", help="copy and switch (default: preview)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace, ctx: Context) -> int:
    # Not at import: every command would load the PostgreSQL driver.
    from casfs.catalog.postgres import migrate
    from casfs.catalog.postgres.database import PostgresDatabase
    from casfs.catalog.sqlite import SqliteCatalog

    with ctx.open_store() as store:
        source = store.catalog
        if not isinstance(source, SqliteCatalog):
            raise CasfsError(f"the store's catalog is {store.locations.catalog}, not SQLite: "
                             "nothing to migrate")
        Locations(args.catalog, store.locations.blobs).check()
        if args.apply and running_mounts(store.layout):
            raise CasfsError("the store is mounted: unmount it (casfs umount) before the "
                             "move, so that no change is left behind in the old catalog")
        target = PostgresDatabase(args.catalog)
        try:
            if not args.apply:
                report = migrate.survey(source, target)
            else:
                progress, total = ProgressLine(), report_total(source)
                with source.write_transaction():  # no other writer until the switch
                    report = migrate.move(
                        source, target, mark=migrate.fingerprint(source, str(store.layout.root)),
                        progress=lambda table, n: progress.update(
                            done=n, total=total, lines=n, moved_bytes=0,
                            unit=f"{table} rows"))
                    progress.close()
                    Locations(args.catalog, store.locations.blobs).write(store.layout)
        finally:
            target.close()
    if args.json:
        print_json({"apply": args.apply, "catalog": args.catalog, **report.as_json()})
        return 0
    counts = ", ".join(f"{n:,} {table}" for table, n in report.counts.items())
    if not args.apply:
        print(f"would copy {counts} and {report.counters} counters into {args.catalog} "
              f"(target: {report.state})")
        if report.state == "other":
            print("the target is not empty: give an empty database")
            return 2
        print("run again with --apply to copy, check and switch")
        return 0
    print(f"{'copied' if report.copied else 'found the earlier copy of'} {counts}; "
          f"checked counts, counters and {report.checked:,} documents")
    print(f"the store now uses {args.catalog} (catalog.db is left as it was)")
    return 0


def report_total(source: SqlCatalog) -> int:
    row = source.db.one("SELECT (SELECT count(*) FROM documents) + "
                        "(SELECT count(*) FROM directories) + (SELECT count(*) FROM blobs)")
    return int(row[0]) if row else 0
