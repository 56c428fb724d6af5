"""Time travel's commands: `casfs snapshot create|list|delete` (named moments whose
blobs gc keeps) and `casfs diff A B` (what changed between two moments)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from casfs.errors import CasfsError
from casfs.moments import BadMoment, format_moment, parse_moment

from .output import human_bytes, print_json

if TYPE_CHECKING:
    from casfs.catalog import Catalog
    from casfs.diff import Difference

    from .context import Context

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "snapshot", help="named moments: mount them, diff them; gc keeps their blobs",
        description="A snapshot names a moment of the store. `casfs mount --at NAME` shows "
                    "the tree of that moment; gc keeps every blob it uses, whatever the "
                    "retention window says, until the snapshot is deleted.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="name a moment (now unless --at)")
    create.add_argument("name", help="letters, digits, '.', '_' and '-'; not a time")
    create.add_argument("--at", metavar="WHEN", default="now",
                        help="the moment (an ISO 8601 time, a date, a time ago such as 3d, "
                             "another snapshot's name, or now: the default)")
    create.add_argument("--note", metavar="TEXT", help="why it was taken")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_create)
    listing = actions.add_parser("list", help="every snapshot, oldest moment first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
    delete = actions.add_parser("delete", help="forget a snapshot (gc judges its blobs "
                                "again at its next run)")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete)

    p = commands.add_parser(
        "diff", help="what changed between two moments",
        description="Documents added, removed, changed (with both hashes) and renamed "
                    "between moment A and moment B, one line per path, in inode order, "
                    "streamed however large the difference. A and B are times, "
                    "snapshot names, or now. Exits 0 when nothing changed, 1 when "
                    "something did (as diff(1) does).",
        epilog="Lines: '+ PATH' added, '- PATH' removed, 'M PATH OLD -> NEW' changed "
               "bytes, 'R OLD_PATH -> PATH' renamed (with the hashes when they changed "
               "too).")
    p.add_argument("first", metavar="A")
    p.add_argument("second", metavar="B")
    p.add_argument("--json", action="store_true",
                   help="a JSON array of {kind, ino, path, old_path, sha256, old_sha256}")
    p.set_defaults(func=cmd_diff)


def resolve_moment(text: str, catalog: Catalog) -> float:
    """A snapshot's moment, or the moment `text` names (see casfs.moments)."""
    snapshot = catalog.snapshot(text) if _NAME.fullmatch(text) else None
    return snapshot.at if snapshot else parse_moment(text)


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    if not _NAME.fullmatch(args.name):
        raise CasfsError(f"{args.name!r} is not a snapshot name: use letters, digits, '.', "
                         "'_' and '-' (at most 128), starting with a letter or digit")
    try:
        parse_moment(args.name)
    except BadMoment:
        pass
    else:
        raise CasfsError(f"{args.name!r} reads as a time; give the snapshot another name")
    with ctx.open_store() as store:
        at = resolve_moment(args.at, store.catalog)
        snapshot = store.catalog.create_snapshot(args.name, at, args.note)
        blobs, size = store.catalog.snapshot_usage(args.name)
        lost, _ = store.catalog.lost_at(at)
    if lost:  # too late for those: a snapshot keeps what is still stored
        print(f"warning: {lost:,} document(s) live at {format_moment(at)} have already lost "
              "their bytes (gc or verify); their files give EIO in views of it",
              file=sys.stderr)
    if args.json:
        print_json({"name": snapshot.name, "at": format_moment(snapshot.at),
                    "note": snapshot.note, "blobs": blobs, "bytes": size, "lost": lost})
    else:
        print(f"snapshot {snapshot.name}: the store as it was at {format_moment(snapshot.at)}"
              f" ({blobs:,} blobs, {human_bytes(size)}, kept by gc until it is deleted)")
    return 0


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.open_store(readonly=True) as store:
        rows = [(s, *store.catalog.snapshot_usage(s.name)) for s in store.catalog.snapshots()]
    if args.json:
        print_json([{"name": s.name, "at": format_moment(s.at), "note": s.note,
                     "created_at": format_moment(s.created_at), "blobs": blobs,
                     "bytes": size} for s, blobs, size in rows])
        return 0
    if not rows:
        print("no snapshots (casfs snapshot create NAME)", file=sys.stderr)
    for s, blobs, size in rows:
        age = _ago(time.time() - s.at)
        print(f"{s.name}\t{format_moment(s.at)} ({age} ago)\t{blobs:,} blobs\t"
              f"{human_bytes(size)}\t{s.note or ''}".rstrip())
    return 0


def cmd_delete(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.open_store() as store:
        if not store.catalog.delete_snapshot(args.name):
            print(f"no snapshot named {args.name!r}", file=sys.stderr)
            return 1
    print(f"deleted snapshot {args.name}; the next gc may delete the blobs only it kept")
    return 0


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def cmd_diff(args: argparse.Namespace, ctx: Context) -> int:
    from casfs.diff import differences

    with ctx.open_store(readonly=True) as store:
        first, second = store.open_catalog(), store.open_catalog()
        try:
            for catalog, when in ((first, args.first), (second, args.second)):
                if when != "now":
                    catalog.show_at(resolve_moment(when, store.catalog))
            count = 0
            if args.json:
                sys.stdout.write("[")
            for difference in differences(first, second):
                if args.json:
                    sys.stdout.write(("," if count else "") + "\n"
                                     + json.dumps(difference.as_json()))
                else:
                    print(_diff_line(difference))
                count += 1
            if args.json:
                sys.stdout.write("\n]\n" if count else "]\n")
        finally:
            first.close()
            second.close()
    if not args.json and sys.stderr.isatty():
        print(f"{count:,} difference(s)", file=sys.stderr)
    return 1 if count else 0


def _diff_line(d: Difference) -> str:
    def short(sha: str | None) -> str:
        return (sha or "")[:12]
    if d.kind == "added":
        return f"+ {d.path}"
    if d.kind == "removed":
        return f"- {d.path}"
    if d.kind == "changed":
        return f"M {d.path}\t{short(d.old_sha256)} -> {short(d.sha256)}"
    bytes_changed = f"\t{short(d.old_sha256)} -> {short(d.sha256)}" \
        if d.old_sha256 != d.sha256 else ""
    return f"R {d.old_path} -> {d.path}{bytes_changed}"
