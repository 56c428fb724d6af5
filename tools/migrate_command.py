"""`casfs migrate --catalog URL`: move a store's SQLite catalog into PostgreSQL;
`casfs migrate --blobs s3://BUCKET/PREFIX`: move its local blobs into a bucket.

Preview by default (what would be copied, and whether the target is empty);
`--apply` copies in one PostgreSQL transaction, checks the copy, and only then
switches the store to it (store.toml). A move that is killed leaves the store on
its SQLite catalog and the target empty; running it again completes it. The
SQLite catalog file stays where it was, untouched, for going back. Blobs move the
same way (casfs.blob_migration): copied and checked one by one, the switch last,
the local files left as they were; a rerun skips what the bucket has.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from casfs.catalog.sql_catalog import SqlCatalog
from casfs.errors import CasfsError
from casfs.processes import running_mounts
from casfs.store import Locations

from .output import human_bytes, print_json
from .progress import ProgressLine

if TYPE_CHECKING:
    from .context import Context


def register(commands: Any) -> None:
    p = commands.add_parser(
        "migrate", help="move the store's catalog into PostgreSQL, its blobs into S3",
        description="--catalog: copy the store's SQLite catalog (documents with their "
                    "history, directories, the blob ledger, counters) into an empty "
                    "PostgreSQL database, check the copy (row counts, counters, a sample "
                    "of documents), and switch the store to it. --blobs: copy every blob "
                    "of the ledger into an S3 bucket (in parallel; each local file hashed "
                    "first and sent with its SHA-256, which the server checks; what the "
                    "bucket has is skipped, so a rerun goes on), point the records at "
                    "it and switch the store to it. Both: the catalog first. Without "
                    "--apply, only says what it would do. Stop the store's mounts first.",
        epilog="Then give every other host its part of the store with 'casfs --store DIR "
               "init --catalog URL --blobs URL'. Nothing local is removed: catalog.db "
               "and cas/ stay for going back. Exit codes: 0 done (or previewed), 2 refused "
               "(mounted, a non-empty target, a failed check, an unreachable bucket), "
               "1 blobs missing or damaged (named; the store is not switched).")
    p.add_argument("--catalog", metavar="URL",
                   help="postgresql://USER@HOST[:PORT]/DB, an empty database")
    p.add_argument("--blobs", metavar="URL",
                   help="s3://BUCKET/PREFIX (endpoint and keys from AWS_* variables)")
    p.add_argument("--workers", type=int, default=8, metavar="N",
                   help="blobs copied at once (default 8)")
    p.add_argument("--apply", action="store_true", help="copy and switch (default: preview)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace, ctx: Context) -> int:
    if not args.catalog and not args.blobs:
        raise CasfsError("say what to move: --catalog URL, --blobs URL, or both")
    if args.workers < 1:
        raise CasfsError("--workers must be at least 1")
    reports: dict[str, dict[str, Any]] = {}  # --json: what each move did
    code = _migrate_catalog(args, ctx, reports) if args.catalog else 0
    if args.blobs and code == 0:
        code = _migrate_blobs(args, ctx, reports)
    if args.json:  # one document: nested when both moved
        print_json(reports if len(reports) > 1 else next(iter(reports.values())))
    return code


def _migrate_catalog(args: argparse.Namespace, ctx: Context,
                     reports: dict[str, dict[str, Any]]) -> int:
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
    refused = not args.apply and report.state == "other"
    if args.json:
        reports["catalog"] = {"apply": args.apply, "catalog": args.catalog,
                              **report.as_json()}
        return 2 if refused else 0
    counts = ", ".join(f"{n:,} {table}" for table, n in report.counts.items())
    if not args.apply:
        print(f"would copy {counts} and {report.counters} counters into {args.catalog} "
              f"(target: {report.state})")
        if refused:
            print("the target is not empty: give an empty database")
            return 2
        print("run again with --apply to copy, check and switch")
        return 0
    print(f"{'copied' if report.copied else 'found the earlier copy of'} {counts}; "
          f"checked counts, counters and {report.checked:,} documents")
    print(f"the store now uses {args.catalog} (catalog.db is left as it was)")
    return 0


def _migrate_blobs(args: argparse.Namespace, ctx: Context,
                   reports: dict[str, dict[str, Any]]) -> int:
    from casfs import blob_migration
    from casfs.blobs import open_blobs

    if urlsplit(args.blobs).scheme != "s3":
        raise CasfsError(f"--blobs {args.blobs}: give the bucket as s3://BUCKET/PREFIX")
    with ctx.open_store() as store:
        if store.blobs.local is False:
            raise CasfsError(f"the store's blobs are in {store.locations.blobs} already")
        if args.apply and running_mounts(store.layout):
            raise CasfsError("the store is mounted: unmount it (casfs umount) before the "
                             "move, so that no blob written meanwhile is left behind")
        target = open_blobs(args.blobs, store.layout.root)
        try:
            if not args.apply:
                report = blob_migration.survey(store, target)
            else:
                progress = ProgressLine()
                report = blob_migration.move(
                    store, target, workers=args.workers,
                    progress=lambda r: progress.update(
                        done=r.copied + r.present, total=max(r.blobs, 1),
                        lines=r.copied, moved_bytes=r.copied_bytes, unit="blobs"))
                progress.close()
                if report.complete:
                    store.catalog.point_records_at(blob_migration.storage_uri_base(target))
                    Locations(store.locations.catalog, args.blobs).write(store.layout)
        except OSError as e:
            raise CasfsError(f"{e}; nothing was switched (run again to go on)") from None
    if args.json:
        reports["blobs"] = {"apply": args.apply, "blobs_url": args.blobs,
                            "switched": args.apply and report.complete, **report.as_json()}
        return 0 if report.complete else 1
    if not args.apply:
        print(f"would copy {report.blobs:,} blobs ({human_bytes(report.bytes)}) into "
              f"{args.blobs}, skipping those it has; run again with --apply")
        return 0
    print(f"copied {report.copied:,} blobs ({human_bytes(report.copied_bytes)}); "
          f"{report.present:,} were there already")
    if report.known_absent:
        print(f"{len(report.known_absent):,} blobs the ledger already marks quarantined or "
              "missing were not there to move (casfs fsck lists them)")
    for sha in report.missing:
        print(f"  missing locally: {sha} (run casfs fsck)")
    for sha in report.damaged:
        print(f"  bytes do not match the name: {sha} (run casfs verify)")
    if not report.complete:
        print("the store still uses its local blobs: repair these and run again")
        return 1
    print(f"the store now uses {args.blobs} (cas/ is left as it was)")
    return 0


def report_total(source: SqlCatalog) -> int:
    row = source.db.one("SELECT (SELECT count(*) FROM documents) + "
                        "(SELECT count(*) FROM directories) + (SELECT count(*) FROM blobs)")
    return int(row[0]) if row else 0
