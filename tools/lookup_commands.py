"""Finding documents without a mount: show, where, search, dedup-report."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from casfs.catalog import ROOT_INO
from casfs.errors import CasfsError
from casfs.naming import identifier_for_dir_name
from casfs.records import DocumentFilter, Found
from casfs.store import Store

from . import argtypes
from .output import human_bytes, iso_time, print_json, record
from .snapshot_commands import resolve_moment

if TYPE_CHECKING:
    from .context import Context



def register(commands: Any) -> None:
    p = commands.add_parser("show", help="the documents of an artifact",
                            description="Every live document of ARTIFACT_ID, any resolver.")
    p.add_argument("artifact_id")
    _output_options(p)
    p.set_defaults(func=cmd_show)

    p = commands.add_parser("where", help="the documents that hold a blob",
                            description="Every live document whose bytes have this SHA-256; "
                                        "a unique prefix of 8 or more hex digits works.")
    p.add_argument("sha256")
    _output_options(p)
    p.set_defaults(func=cmd_where)

    p = commands.add_parser("search", help="documents by resolver, type, URL, run, time, size",
                            description="Live documents that match every filter given.")
    p.add_argument("--resolver")
    p.add_argument("--content-type")
    p.add_argument("--artifact", metavar="GLOB", help="artifact id glob, e.g. 'W44*'")
    p.add_argument("--url", metavar="SUBSTRING", help="part of the source URL")
    p.add_argument("--run", metavar="RUN_ID")
    p.add_argument("--since", type=argtypes.moment, metavar="TIME",
                   help="created at or after (ISO 8601)")
    p.add_argument("--until", type=argtypes.moment, metavar="TIME",
                   help="created before (ISO 8601)")
    p.add_argument("--min-size", type=argtypes.size, metavar="SIZE", help="bytes, or 10k, 5M, 1G")
    p.add_argument("--max-size", type=argtypes.size, metavar="SIZE")
    p.add_argument("--limit", type=int, metavar="N")
    _output_options(p)
    p.add_argument("--jsonl", action="store_true", help="one JSON record a line, streamed")
    p.set_defaults(func=cmd_search)

    p = commands.add_parser(
        "history", help="every version of a document",
        description="Every version of the document at PATH (/<resolver>/<artifact>/<name>), "
                    "or of the last one that was there: when each was current, why it "
                    "ended (overwrite, rename, unlink, ...), where it was, and its bytes.")
    p.add_argument("path")
    _output_options(p)
    p.set_defaults(func=cmd_history)

    p = commands.add_parser("dedup-report", help="what deduplication saves, and where",
                            description="Logical and physical bytes, the dedup ratio, the "
                                        "largest groups of documents sharing one blob, "
                                        "savings by resolver, and blobs registered under "
                                        "more than one content type.")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="how many duplicate groups to list (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dedup_report)


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="a JSON array of records")
    p.add_argument("--at", metavar="WHEN",
                   help="as the store was at WHEN (an ISO 8601 time, a date, a time ago "
                        "such as 3d, a snapshot's name, or now): the documents live then, "
                        "at their paths of then")


def _open(args: argparse.Namespace, ctx: Context) -> Store:
    """The store, read-only, showing the moment of --at if one was given."""
    store = ctx.open_store(readonly=True)
    if args.at is not None:
        try:
            store.show_at(resolve_moment(args.at, store.catalog))
        except BaseException:
            store.close()
            raise
    return store


def _emit(found: Iterable[Found], args: argparse.Namespace) -> int:
    """Print records in the format asked for; exit 1 when there were none."""
    count = 0
    if getattr(args, "jsonl", False):
        import json

        for item in found:
            sys.stdout.write(json.dumps(record(item)) + "\n")
            count += 1
    elif args.json:
        records = [record(item) for item in found]
        print_json(records)
        count = len(records)
    else:
        for item in found:
            doc = item.document
            print(f"{item.path}\t{human_bytes(doc.bytes)}\t{doc.sha256[:12]}\t"
                  f"{iso_time(doc.created_at)}\t{doc.source_url or '-'}")
            count += 1
        if count == 0:
            print("no documents found", file=sys.stderr)
    return 0 if count else 1


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    with _open(args, ctx) as store:
        return _emit(store.catalog.search(DocumentFilter(artifact_id=args.artifact_id)), args)


def cmd_where(args: argparse.Namespace, ctx: Context) -> int:
    prefix = args.sha256.lower()
    if len(prefix) < 8 or len(prefix) > 64 or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise CasfsError(f"{args.sha256!r}: give 8 to 64 hex digits of a SHA-256")
    with _open(args, ctx) as store:
        matches = store.catalog.blobs_with_prefix(prefix, limit=3)
        if len(matches) > 1:
            raise CasfsError(f"{prefix} is ambiguous: it starts {', '.join(matches[:2])}"
                             f"{' and more' if len(matches) > 2 else ''}")
        if not matches:
            if not args.json:
                print(f"no blob starts with {prefix}", file=sys.stderr)
            else:
                print_json([])
            return 1
        return _emit(store.catalog.search(DocumentFilter(sha256=matches[0])), args)


def cmd_search(args: argparse.Namespace, ctx: Context) -> int:
    query = DocumentFilter(
        resolver=args.resolver, content_type=args.content_type, artifact_glob=args.artifact,
        url_substring=args.url, run_id=args.run, since=args.since, until=args.until,
        min_size=args.min_size, max_size=args.max_size, limit=args.limit)
    with _open(args, ctx) as store:
        return _emit(store.catalog.search(query), args)


def cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    parts = [p for p in args.path.split("/") if p]
    if len(parts) != 3:
        raise CasfsError(f"{args.path!r}: give a path /<resolver>/<artifact>/<name>")
    with _open(args, ctx) as store:
        catalog = store.catalog
        resolver_dir = catalog.lookup_directory(ROOT_INO, parts[0])
        artifact_dir = resolver_dir and catalog.lookup_directory(resolver_dir.ino, parts[1])
        if args.at is not None:  # the document that was at PATH then
            last = artifact_dir and catalog.lookup_document(artifact_dir, parts[2])
            if not last:
                print(f"nothing was at {args.path} at {args.at}", file=sys.stderr)
                return 1
        else:
            resolver = resolver_dir.resolver if resolver_dir else \
                identifier_for_dir_name(parts[0])
            artifact = (artifact_dir.artifact_id if artifact_dir and artifact_dir.artifact_id
                        else identifier_for_dir_name(parts[1]))
            last = catalog.last_at_path(resolver, artifact, parts[2])
            if last is None:
                print(f"nothing was ever at {args.path}", file=sys.stderr)
                return 1
        versions = catalog.history(last.ino)
        states = {v.sha256: catalog.blob_state(v.sha256) for v in versions}
        paths = {v.id: catalog.virtual_path(v) for v in versions}
    rows = [{**record(Found(v, paths[v.id])), "valid_from": iso_time(v.valid_from),
             "valid_to": iso_time(v.valid_to), "change": v.change,
             "blob": states[v.sha256]} | ({"shown": v.id == last.id} if args.at else {})
            for v in versions]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        until = row["valid_to"] or "now"
        ended = f" ({row['change']})" if row["change"] else ""
        gone = "" if row["blob"] == "present" else f"  [blob {row['blob']}]"
        shown = "  <- at " + args.at if row.get("shown") else ""
        print(f"{row['valid_from']} .. {until}{ended}\t{row['path']}\t"
              f"{human_bytes(row['bytes'])}\t{row['sha256'][:12]}{gone}{shown}")
    return 0


def cmd_dedup_report(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.open_store(readonly=True) as store:
        stats = store.catalog.stats()
        groups = store.catalog.duplicate_groups(args.top)
        by_resolver = store.catalog.savings_by_resolver()
        anomalies = store.catalog.content_type_conflicts()
    logical, physical = stats["logical_bytes"], stats["physical_bytes"]
    report = {
        "documents": stats["documents"], "blobs": stats["blobs"],
        "logical_bytes": logical, "physical_bytes": physical,
        "dedup_ratio": round(logical / physical, 4) if physical else 1.0,
        "saved_bytes": logical - physical,
        "groups": [{"sha256": g.sha256, "bytes": g.bytes, "references": g.references,
                    "saved_bytes": g.saved_bytes, "paths": g.paths} for g in groups],
        "by_resolver": by_resolver,
        "anomalies": {"content_type_conflicts": anomalies},
    }
    if args.json:
        print_json(report)
        return 0
    print(f"documents {report['documents']:,}, blobs {report['blobs']:,}")
    print(f"logical {human_bytes(logical)}, physical {human_bytes(physical)}, "
          f"ratio {report['dedup_ratio']:.2f}, saved {human_bytes(logical - physical)}")
    if groups:
        print(f"\nlargest duplicate groups (top {args.top}):")
    for g in groups:
        print(f"  {g.sha256[:12]}  {g.references} x {human_bytes(g.bytes)}  "
              f"saves {human_bytes(g.saved_bytes)}")
        for path in g.paths:
            print(f"      {path}")
    if by_resolver:
        print("\nby resolver:")
    for row in by_resolver:
        print(f"  {row['resolver']:<20} {row['documents']:>10,} docs  "
              f"{human_bytes(row['logical_bytes']):>10}  saved "
              f"{human_bytes(row['saved_bytes'])}")
    if anomalies:
        print("\nthe same bytes under different content types:")
    for item in anomalies:
        print(f"  {item['sha256'][:12]}  {', '.join(item['content_types'])}")
    return 0
