"""Subcommands about the store itself: init, put, stats."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from casfs.config import config_path, write_config
from casfs.errors import CasfsError
from casfs.ingest import ingest_file
from casfs.records import Found
from casfs.store import Store

from .output import human_bytes, print_json, record

if TYPE_CHECKING:
    from .context import Context


def register(commands: Any) -> None:
    p = commands.add_parser(
        "init", help="create a store (or this host's part of a shared one)",
        description="Create the store directory (catalog, cas/, tmp/ ...) and, if there is "
                    "none, a config file naming it. With --catalog, the catalog is that "
                    "PostgreSQL database, shared with every host that names it: its schema "
                    "is created if the database is empty, else this host joins the store "
                    "that is there. With --blobs, the blobs are in that directory (one "
                    "that every host sees, such as an NFS export).",
        epilog="Passwords never go into the config: libpq reads PGPASSWORD, ~/.pgpass or "
               "PGPASSFILE. Example: casfs --store /var/lib/casfs init --catalog "
               "postgresql://casfs@db.example/casfs --blobs file:///mnt/shared/casfs")
    p.add_argument("--catalog", metavar="URL",
                   help="postgresql://USER@HOST[:PORT]/DB (default: catalog.db in the store)")
    p.add_argument("--blobs", metavar="URL",
                   help="file:///PATH, a directory for cas/, tmp/ and quarantine/ "
                        "(default: the store directory)")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser(
        "put", help="store a file and register it as a document",
        description="Store FILE once (by SHA-256) and register it under "
                    "/<resolver>/<artifact>/<name>. Registering the same (artifact, "
                    "source URL, resolver) again with the same bytes changes nothing.")
    p.add_argument("file", type=Path)
    p.add_argument("--resolver", required=True)
    p.add_argument("--artifact", required=True, help="the artifact id, e.g. W4415231876")
    p.add_argument("--source-url", help="where the file was fetched from")
    p.add_argument("--name", help="the file name in the tree (default: FILE's name)")
    p.add_argument("--content-type", help="default: guessed from the name")
    p.add_argument("--run-id")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_put)

    p = commands.add_parser("stats", help="counts and sizes of the store",
                            description="Documents, blobs, logical and physical bytes.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    with Store.init(ctx.store_path, catalog=args.catalog, blobs=args.blobs) as store:
        if args.catalog or args.blobs:
            print(f"catalog: {store.locations.catalog}\nblobs: {store.locations.blobs}")
    path = ctx.config.path or config_path()
    if not path.exists():
        write_config(path, replace(ctx.config, store=ctx.store_path.absolute()))
        print(f"config written to {path}")
    print(f"store ready at {ctx.store_path.absolute()}")
    return 0


def cmd_put(args: argparse.Namespace, ctx: Context) -> int:
    if not args.file.is_file():
        raise CasfsError(f"{args.file}: not a readable file")
    with ctx.open_store() as store:
        result = ingest_file(store, args.file, resolver=args.resolver,
                             artifact_id=args.artifact, source_url=args.source_url,
                             name=args.name, content_type=args.content_type,
                             run_id=args.run_id)
        if args.json:
            path = store.catalog.virtual_path(result.document)
            print_json({**record(Found(result.document, path)), "outcome": result.outcome,
                        "dedup_hit": result.dedup_hit})
        else:
            note = " (bytes already stored)" if result.dedup_hit else ""
            print(f"{result.outcome}: {store.catalog.virtual_path(result.document)} "
                  f"{result.document.sha256[:12]}{note}")
    return 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def cmd_stats(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.open_store(readonly=not os.access(ctx.store_path, os.W_OK)) as store:
        stats: dict[str, Any] = {**store.catalog.stats(),
                                 "store": str(ctx.store_path.absolute()),
                                 "catalog": _without_password(store.locations.catalog),
                                 "blob_store": store.locations.blobs}
    if args.json:
        print_json(stats)
        return 0
    logical, physical = stats["logical_bytes"], stats["physical_bytes"]
    ratio = logical / physical if physical else 1.0
    print(f"store:          {stats['store']}")
    print(f"catalog:        {stats['catalog']}")
    print(f"blob store:     {stats['blob_store']}")
    print(f"documents:      {stats['documents']:,} ({stats['versions']:,} versions kept)")
    print(f"blobs:          {stats['blobs']:,}")
    print(f"logical bytes:  {human_bytes(logical)}")
    print(f"physical bytes: {human_bytes(physical)} (dedup ratio {ratio:.2f}, "
          f"{stats['dedup_hits']:,} dedup hits)")
    return 0
