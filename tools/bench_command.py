"""`casfs bench`: measure the mount against the native filesystem, in one run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import argtypes
from .output import print_json

if TYPE_CHECKING:
    from .context import Context


def register(commands: Any) -> None:
    p = commands.add_parser(
        "bench", help="time workloads through a mount and natively, as ratios",
        description="On a temporary store and mount under --dir (so on the same disk), "
                    "run each workload through the mount and natively: ingest and reads "
                    "of a large file, many small files (one cp, 8 cp at once, a bulk load), "
                    "stat, ls -l, find, and lookup and "
                    "readdir on a small and a large synthetic catalog. Prints both times "
                    "and their ratio; leaves nothing behind. Times on a shared machine "
                    "vary: compare ratios.")
    p.add_argument("--dir", type=Path, default=Path.cwd(),
                   help="where to work (default: the current directory)")
    p.add_argument("--size", type=argtypes.size, default=1 << 30, metavar="SIZE",
                   help="the large file (default 1G)")
    p.add_argument("--files", type=int, default=10_000, metavar="N",
                   help="small files (default 10000)")
    p.add_argument("--records", type=int, default=1_000_000, metavar="N",
                   help="records of the large synthetic catalog (default 1000000)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, ctx: Context) -> int:
    from .bench import bench  # not at import: it loads the mount
    interactive = sys.stderr.isatty()

    def say(text: str) -> None:
        if interactive:
            print(text, file=sys.stderr, flush=True)

    rows, memory = bench(args.dir, size=args.size, files=args.files, records=args.records,
                         progress=say)
    if args.json:
        print_json({"rows": [r.as_json() for r in rows], "daemon_peak_rss_mib": memory})
        return 0
    width = max(len(r.workload) for r in rows)
    print(f"{'workload':<{width}}  {'native':>9}  {'mount':>9}  {'mount/native':>12}  goal")
    for r in rows:
        native = _seconds(r.native) if r.native is not None else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio else "-"
        rate = f" ({r.count / r.mount:,.0f} {r.unit}/s)" if r.count and r.mount else ""
        print(f"{r.workload:<{width}}  {native:>9}  {_seconds(r.mount):>9}  {ratio:>12}  "
              f"{r.goal}{rate}")
    for name, mib in memory.items():
        print(f"daemon peak memory ({name}): {mib:.1f} MiB")
    return 0


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f}s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f}ms"
    return f"{value * 1e6:.0f}us"
