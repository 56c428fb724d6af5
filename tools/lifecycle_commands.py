"""`casfs gc`, `casfs backup` and `casfs restore`: reclaim space, keep the catalog safe."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casfs import gc
from casfs.durations import format_duration

from . import argtypes
from .output import human_bytes, iso_time, print_json

if TYPE_CHECKING:
    from .context import Context

SHOWN = 50


def register(commands: Any) -> None:
    p = commands.add_parser(
        "gc", help="delete blobs no kept record uses (preview unless --apply)",
        description="A blob is garbage when no live record uses it, no record closed less "
                    "than --keep-history ago does (or the window of a matching "
                    "[[gc.retention]] rule), and it is older than --grace. In an object "
                    "store, objects uploaded but never registered (orphans) older than "
                    "--grace go too; gc lists the whole bucket before it deletes anything "
                    "and stops on a listing error. A blob that a document live at a "
                    "snapshot's moment uses is kept (casfs snapshot). Without --apply "
                    "nothing is deleted: each blob is listed with the record that last "
                    "used it, and what each snapshot keeps is said.",
        epilog="Durations: 0, 90s, 90m, 12h, 7d, 2w. Defaults come from [gc] in the config "
               "file (grace 1d, keep_history 30d). Safe beside running mounts.")
    p.add_argument("--grace", type=argtypes.duration, metavar="D",
                   help="minimum age of a blob to delete (default: config, 1d)")
    p.add_argument("--keep-history", type=argtypes.duration, metavar="D",
                   help="how long closed records keep their blobs (default: config, 30d)")
    p.add_argument("--apply", action="store_true", help="delete (default: preview)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gc)

    p = commands.add_parser(
        "backup", help="an online, consistent copy of the catalog",
        description="Copy the catalog to DEST (a directory) while mounts keep running, "
                    "with backup.json: time, counts and checksum. Blobs are not copied: "
                    "back up cas/ with your file backup tool.")
    p.add_argument("dest", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backup)

    p = commands.add_parser(
        "restore", help="replace the catalog with a checked backup (preview unless --apply)",
        description="Check a backup made by 'casfs backup' (checksum, integrity, schema) "
                    "and, with --apply, put it in place of the catalog; the old catalog is "
                    "kept beside it. Unmount the store first.")
    p.add_argument("src", type=Path)
    p.add_argument("--apply", action="store_true", help="replace (default: check only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restore)


def cmd_gc(args: argparse.Namespace, ctx: Context) -> int:
    policy = ctx.config.gc.policy(grace=args.grace, keep_history=args.keep_history)
    shown = 0

    def show(garbage: gc.Garbage) -> None:
        nonlocal shown
        if args.json or shown >= SHOWN:
            return
        shown += 1
        last = (f"{garbage.last_path} (closed {iso_time(garbage.last_used)})"
                if garbage.last_path else
                f"an object never registered (uploaded {iso_time(garbage.first_seen)})"
                if garbage.orphan else "no record")
        print(f"  {garbage.sha256[:16]}  {human_bytes(garbage.bytes):>10}  {last}")

    listed: list[dict[str, Any]] = []
    with ctx.open_store() as store:
        if not args.json:
            print(f"blobs unused by live records, by records closed less than "
                  f"{format_duration(policy.keep_history)} ago, and older than "
                  f"{format_duration(policy.grace)}:")
        report = gc.collect(store, policy, apply=args.apply,
                            on_blob=(lambda g: listed.append(g.as_json())) if args.json
                            else show)
        kept = store.catalog.kept_by_snapshots(policy, time.time())
    if args.json:
        print_json({"apply": args.apply, "blobs": report.blobs, "bytes": report.bytes,
                    "removed": report.removed, "removed_bytes": report.removed_bytes,
                    "grace": policy.grace, "keep_history": policy.keep_history,
                    "garbage": listed,
                    "kept_by_snapshots": [{"snapshot": name, "blobs": blobs, "bytes": size}
                                          for name, blobs, size in kept]})
        return 0
    if report.blobs > shown:
        print(f"  ... and {report.blobs - shown:,} more")
    for name, blobs, size in kept:
        print(f"kept for snapshot {name}: {blobs:,} blobs ({human_bytes(size)}) that "
              "history alone would not keep")
    if args.apply:
        print(f"deleted {report.removed:,} blobs ({human_bytes(report.removed_bytes)})"
              + (f"; {report.blobs - report.removed:,} were used again meanwhile"
                 if report.removed < report.blobs else ""))
    else:
        print(f"{report.blobs:,} blobs ({human_bytes(report.bytes)}) would be deleted; "
              "nothing changed (add --apply to delete)")
    return 0


def cmd_backup(args: argparse.Namespace, ctx: Context) -> int:
    from casfs.catalog.sqlite import backup as backups  # SQLite only: loaded when asked
    with ctx.open_store() as store:
        meta = backups.backup(store, args.dest)
    if args.json:
        print_json(meta)
    else:
        print(f"backed up {meta['counts']['documents']:,} documents to {args.dest} "
              f"(sha256 {meta['sha256'][:16]}...)")
    return 0


def cmd_restore(args: argparse.Namespace, ctx: Context) -> int:
    from casfs.catalog.sqlite import backup as backups  # SQLite only: loaded when asked
    meta = backups.check(args.src)
    kept = None
    if args.apply:
        kept = backups.restore(ctx.store_path, args.src)
    if args.json:
        print_json({**meta, "applied": args.apply, "previous_catalog": kept and str(kept)})
    elif args.apply:
        print(f"restored the catalog from {args.src} (taken {iso_time(meta['time'])}); "
              f"the previous catalog is kept at {kept}")
    else:
        print(f"{args.src} is a good backup: {meta['counts']['documents']:,} documents, "
              f"taken {iso_time(meta['time'])}; nothing changed (add --apply to restore)",
              file=sys.stdout)
    return 0
