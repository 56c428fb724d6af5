"""`casfs verify` and `casfs fsck`: prove the bytes and the catalog are intact."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from casfs import fsck
from casfs import verify as verifying
from casfs.errors import CasfsError

from . import argtypes
from .output import human_bytes, print_json
from .progress import ProgressLine

if TYPE_CHECKING:
    from .context import Context


def register(commands: Any) -> None:
    p = commands.add_parser(
        "verify", help="re-hash blobs and compare them with their names",
        description="Re-hash blobs, least recently verified first, in parallel threads. A "
                    "blob whose bytes do not match its name is moved to quarantine/, and "
                    "the records that use it are listed; a missing blob is a failure too.",
        epilog="Exit status: 0 every checked blob is intact, 1 failures found, 2 usage "
               "or environment errors. Without a selection, every blob is checked. "
               "--cache checks this host's cached copies instead (a mount trusts a copy "
               "unchanged since it was hashed, and cannot see a disk that fails beneath "
               "it).")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every blob (the default)")
    which.add_argument("--sample", type=float, metavar="FRACTION",
                       help="about this fraction of the blobs, e.g. 0.01")
    which.add_argument("--oldest", type=int, metavar="N",
                       help="the N least recently verified blobs")
    which.add_argument("--path", metavar="P", help="the blob of one virtual path")
    which.add_argument("--sha", metavar="S", help="one blob, by its full SHA-256")
    which.add_argument("--cache", action="store_true",
                       help="instead of the blobs: every copy in this host's read cache "
                            "(S3 stores), whatever its stamp says; a damaged copy is "
                            "dropped and fetched again at its next read")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="hashing threads (default 2)")
    p.add_argument("--max-duration", type=argtypes.duration, metavar="D",
                   help="stop after this long (e.g. 30m); the next run goes on from there")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser(
        "fsck", help="check the store against its laws (and repair with --repair --apply)",
        description="Checks: the catalog's integrity; live records whose blob is missing, "
                    "quarantined or of another size; records without a directory "
                    "(invisible); path collisions; blob files with no catalog row, a bad "
                    "name or write permission; staging files left by dead processes. "
                    "Each problem is named with its path and hash.",
        epilog="Exit status: 0 no problems (or all repaired with --apply), 1 problems, "
               "2 usage or environment errors. --repair alone shows what would be done.")
    p.add_argument("--repair", action="store_true", help="say how each problem is repaired")
    p.add_argument("--apply", action="store_true", help="with --repair: repair")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fsck)


def cmd_verify(args: argparse.Namespace, ctx: Context) -> int:
    if args.sample is not None and not 0 < args.sample <= 1:
        raise CasfsError("--sample takes a fraction between 0 and 1")
    if args.sha is not None and not re.fullmatch(r"[0-9a-f]{64}", args.sha.lower()):
        raise CasfsError("--sha takes a full SHA-256 (64 hex digits); see 'casfs where'")
    if args.cache and args.max_duration is not None:
        raise CasfsError("--max-duration applies to the blobs, not to --cache (which "
                         "hashes every cached copy)")
    progress = ProgressLine()
    if args.cache:
        with ctx.open_store() as store:
            try:
                report = verifying.verify_cache(
                    store, jobs=args.jobs, on_progress=lambda r, total: progress.update(
                        done=r.bytes, total=total, lines=r.checked, moved_bytes=r.bytes,
                        unit="cached blobs"))
            finally:
                progress.close()
        return _said(args, report, "cached blobs")
    with ctx.open_store() as store:
        # A second connection reads the selection from one snapshot while the
        # ledger is written through the first.
        snapshot = store.open_catalog(readonly=True)
        try:
            selection = verifying.select(
                snapshot, sample=args.sample, oldest=args.oldest, path=args.path,
                sha256=args.sha.lower() if args.sha else None)
            report = verifying.verify(
                store, selection, jobs=args.jobs, max_duration=args.max_duration,
                total_bytes=snapshot.blobs_to_verify_bytes(),
                on_progress=lambda r, total: progress.update(
                    done=r.bytes, total=total, lines=r.checked, moved_bytes=r.bytes,
                    unit="blobs"))
        finally:
            snapshot.close()
            progress.close()
    if args.path and report.checked == 0:
        raise CasfsError(f"{args.path}: no such document")
    return _said(args, report, "blobs")


def _said(args: argparse.Namespace, report: verifying.VerifyReport, what: str) -> int:
    """Print a verify report; its exit status."""
    if args.json:
        print_json(report.as_json())
    else:
        rate = report.bytes / report.seconds if report.seconds else 0
        print(f"checked {report.checked:,} {what} ({human_bytes(report.bytes)}, "
              f"{human_bytes(rate)}/s): {report.ok:,} ok, {len(report.failures):,} failed"
              + (" (stopped at --max-duration; run again to go on)"
                 if report.stopped_early else ""))
        for failure in report.failures:
            where = f" -> {failure.quarantined_to}" if failure.quarantined_to else ""
            if failure.problem == "damaged-cached-copy":
                where = " (dropped from this host's cache; fetched again at its next read)"
            print(f"  {failure.problem}: {failure.sha256}{where}")
            for path in failure.paths:
                print(f"      used by {path}")
    return 1 if report.failures else 0


def cmd_fsck(args: argparse.Namespace, ctx: Context) -> int:
    if args.apply and not args.repair:
        raise CasfsError("--apply goes with --repair")
    repaired: list[bool] = []
    with ctx.open_store(recover=False) as store:
        problems = fsck.fsck(store)
        if args.repair and args.apply:
            repaired = [fsck.repair(store, p) for p in problems]
    left = [p for p, done in zip(problems, repaired or [False] * len(problems), strict=True)
            if not done]
    if args.json:
        print_json({"problems": [p.as_json() for p in problems],
                    "repaired": sum(repaired), "unrepaired": len(left)})
    else:
        for i, problem in enumerate(problems):
            where = " ".join(x for x in (problem.path, problem.sha256) if x)
            print(f"{problem.kind}: {problem.detail}" + (f" ({where})" if where else ""))
            if args.repair:
                status = ("repaired" if repaired and repaired[i] else
                          "would" if not args.apply else "NOT repaired")
                print(f"    {status}: {problem.repair or 'no automatic repair'}")
        if not problems:
            print("no problems found")
        elif args.repair and not args.apply:
            print(f"{len(problems)} problem(s); nothing changed (add --apply to repair)")
        else:
            print(f"{len(problems)} problem(s), {sum(repaired)} repaired")
    return 1 if left else 0
