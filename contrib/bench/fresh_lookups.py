"""Fresh lookups and listings through a live mount, per operation: the number to
compare between two versions of casfs (run it from each checkout, alternating).

    .venv/bin/python contrib/bench/fresh_lookups.py [--dir DIR] [--runs 3]

Writes 4,000 small files in 20 artifact directories through a mount, then, on a
new mount each run with the kernel's names dropped (as root), stats every file by
path (a LOOKUP each) and lists every directory. Leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import drop_caches, mounted, remove_work, write_files  # noqa: E402

from casfs.store import Store  # noqa: E402

DIRS, FILES = 20, 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-fresh-lookups-", dir=args.dir))
    try:
        Store.init(work / "store").close()
        with mounted(work / "store", work / "mnt") as mnt:
            for d in range(DIRS):
                write_files(mnt / "r" / f"W{d}", [f"f{i}.bin" for i in range(FILES)],
                            b"x" * 100)
        for _ in range(args.runs):
            drop_caches(2)
            with mounted(work / "store", work / "mnt") as mnt:
                paths = [mnt / "r" / f"W{d}" / f"f{i}.bin"
                         for d in range(DIRS) for i in range(FILES)]
                start = time.perf_counter()
                for path in paths:
                    os.stat(path)
                stat_us = (time.perf_counter() - start) / len(paths) * 1e6
                start = time.perf_counter()
                for d in range(DIRS):
                    list(os.scandir(mnt / "r" / f"W{d}"))
                listing_ms = (time.perf_counter() - start) / DIRS * 1e3
            print(f"fresh stat per path {stat_us:6.1f} us   listing of {FILES} entries "
                  f"{listing_ms:5.2f} ms", flush=True)
    finally:
        remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
