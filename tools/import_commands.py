"""`casfs import-manifest`: bring legacy download runs into the store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from casfs.errors import CasfsError
from casfs.importer import ImportReport, Progress, import_manifests, manifests_in

from .output import human_bytes, print_json
from .progress import ProgressLine

if TYPE_CHECKING:
    from .context import Context

SHOWN_ERRORS = 20


def register(commands: Any) -> None:
    p = commands.add_parser(
        "import-manifest", help="import legacy download runs (preview unless --apply)",
        description="Import the files that manifest.jsonl lines describe. Without --apply "
                    "nothing changes: it says what would be imported, skipped and why. Bad "
                    "lines are reported with their line numbers and skipped. Running it "
                    "again adds nothing; an interrupted run resumes.",
        epilog="Exit status: 0 all importable lines are in the store, 1 some lines had "
               "errors, 2 usage or environment errors.")
    p.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST",
                   help="a manifest.jsonl, or a run directory to search for them")
    p.add_argument("--apply", action="store_true", help="import (default: preview only)")
    p.add_argument("--move", action="store_true",
                   help="remove each original once its record is committed, like mv; "
                        "on the store's filesystem the bytes are not copied at all")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--errors", type=Path, metavar="FILE",
                   help="write every error as a JSON line to FILE")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace, ctx: Context) -> int:
    manifests = manifests_in(args.manifests)
    for manifest in manifests:
        if not manifest.is_file():
            raise CasfsError(f"{manifest}: no such manifest")
    if not manifests:
        raise CasfsError("no manifest.jsonl found under the given directories")
    errors_file: IO[str] | None = args.errors.open("w") if args.errors else None
    progress = ProgressLine()

    def on_error(item: dict[str, Any]) -> None:
        if errors_file:
            errors_file.write(json.dumps(item) + "\n")

    def on_progress(p: Progress) -> None:
        progress.update(done=p.read_bytes, total=p.total_bytes, lines=p.lines,
                        moved_bytes=p.imported_bytes)

    try:
        with ctx.open_store() as store:
            report = import_manifests(store, manifests, apply=args.apply, move=args.move,
                                      on_error=on_error, on_progress=on_progress)
    finally:
        progress.close()
        if errors_file:
            errors_file.close()
    if args.json:
        print_json(report.as_json())
    else:
        _print_report(report, move=args.move)
    return 1 if report.error_count else 0


def _print_report(report: ImportReport, *, move: bool) -> None:
    if report.apply:
        print(f"imported {report.imported:,} documents ({human_bytes(report.bytes)}, "
              f"{report.dedup_hits:,} already stored as blobs)")
    else:
        verb = "moved" if move else "copied"
        print(f"preview: {report.would_import:,} documents would be {verb} in "
              f"({human_bytes(report.bytes)}); nothing changed (add --apply to import)")
    print(f"{report.lines:,} lines read, {report.already_imported:,} already imported, "
          f"{sum(report.skipped_by_reason.values()):,} skipped, "
          f"{report.error_count:,} errors")
    for reason, count in report.skipped_by_reason.most_common():
        print(f"  skipped {count:,}: {reason}")
    for item in report.errors[:SHOWN_ERRORS]:
        print(f"  error {item['manifest']}:{item['line']}: {item['reason']}")
    if report.error_count > SHOWN_ERRORS:
        print(f"  ... {report.error_count - SHOWN_ERRORS:,} more errors (see --errors FILE)")
    for item in report.warnings[:SHOWN_ERRORS]:
        print(f"  warning {item['manifest']}:{item['line']}: {item['reason']}")
