"""Read one file again and again, dropping its cached pages before each read: a
first read without a new mount each time, to run under a profiler.

    .venv/bin/python contrib/bench/reread.py FILE [--times 20] [--chunk-kib 1024]

Before each read, posix_fadvise(DONTNEED) drops the file's pages (on a file in the
mount, the FUSE pages only: the blob underneath stays cached), then the file is
read in --chunk-kib reads. Prints each read's time and MiB/s. The README's account
of first reads ran it under `perf record -e cpu-clock -F 2000 -a -g` for a file in
the mount, and once for the same bytes outside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def read_once(path: Path, chunk: int) -> tuple[float, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        start = time.perf_counter()
        total = 0
        while data := os.read(fd, chunk):
            total += len(data)
        return time.perf_counter() - start, total
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    args = parser.parse_args()
    for run in range(args.times):
        seconds, size = read_once(args.file, args.chunk_kib << 10)
        print(f"read {run + 1}: {seconds * 1000:.1f} ms, {size / seconds / (1 << 20):.0f} MiB/s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
