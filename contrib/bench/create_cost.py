"""What making a file costs on a filesystem, and how recent deletions change it:
the experiment behind the mount's staging files made ahead (mount/staging_reserve.py).

    .venv/bin/python contrib/bench/create_cost.py [--dir DIR] [--files 2000]
        [--deleted 0 5000 20000]

For each count in --deleted, --dirs times, in a new directory under DIR: makes and
deletes that many files of 2 KiB, then times --files unnamed staging files
(O_TMPFILE, as a store's) made one after another, and prints the wall and CPU time
a file (median and 90th percentile of the wall time). On ext4 without a journal the
inode allocator passes over every inode of the block group deleted in the last
minutes (`recently_deleted` in `perf`), so what a file costs depends on the group
a new directory lands in and on what was deleted there lately (a test suite's
temporary trees, an earlier benchmark's store). Leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def one_case(root: Path, files: int, deleted: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="casfs-create-cost-", dir=root))
    try:
        payload = os.urandom(2048)
        for i in range(deleted):
            (work / f"old{i}").write_bytes(payload)
        for i in range(deleted):
            (work / f"old{i}").unlink()
        fds, times = [], []
        cpu = time.process_time()
        for _ in range(files):
            start = time.perf_counter()
            fds.append(os.open(work, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600))
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        for fd in fds:
            os.close(fd)
        times.sort()
        return {"deleted before": deleted, "wall p50, us": times[len(times) // 2] * 1e6,
                "wall p90, us": times[len(times) * 9 // 10] * 1e6,
                "CPU per file, us": cpu / files * 1e6}
    finally:
        shutil.rmtree(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--deleted", type=int, nargs="+", default=[0, 5000])
    parser.add_argument("--dirs", type=int, default=3, help="new directories per count")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [one_case(args.dir, args.files, deleted)
            for deleted in args.deleted for _ in range(args.dirs)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'deleted before':>15} {'wall p50, us':>13} {'wall p90, us':>13} "
          f"{'CPU per file, us':>17}")
    for row in rows:
        print(f"{row['deleted before']:>15,} {row['wall p50, us']:>13.0f} "
              f"{row['wall p90, us']:>13.0f} {row['CPU per file, us']:>17.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
