"""What placing a small blob costs on this disk, without FUSE or a catalog: the
experiment behind the README's account of durable small files.

    .venv/bin/python contrib/bench/place_cost.py [--dir DIR] [--files 800]
        [--threads 8] [--round 8] [--repeat 2] [--json]

A store is made under --dir (on the filesystem to measure) and --files blobs of 2 KiB
are staged and placed by the store's own code (`place_blob`) in six ways, the ways
alternating on every repeat:

- durable, one after another: `place` of one file (fsync of the staging file,
  link, fsync of the directory), one file at a time;
- durable, in --threads threads at once: the same fsyncs, overlapping, so that the
  filesystem's journal may take several in one commit;
- durable, by rounds of --round files: `place_batch`, as an import does (from
  three files, two syncfs for the round instead of two fsyncs a file, while little
  else waits to be written back);
- durable, by rounds, linked first: as a round of closes on a durable mount does
  (casfs.link_first: every blob linked, then one syncfs for bytes and names);
- bulk load: placed without an fsync, and one `sync` (syncfs) per --round files,
  as a bulk load's durability round does;
- not durable: placed without any sync (the floor: what the rest of placing costs).

Per way: microseconds per file (wall) and the files per second it allows. On a disk
where a cache flush is slow, the first way is bounded by two flushes per file, the
third by two per round, the fourth and fifth by one per round. Everything is
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from casfs.blobs import BlobStore  # noqa: E402
from casfs.blobs.staging import StagingFile  # noqa: E402
from casfs.ingest import place_blob  # noqa: E402
from casfs.store import Store  # noqa: E402


def staged(blobs: BlobStore, count: int) -> list[StagingFile]:
    """`count` staging files of 2 KiB of random bytes each (no two alike)."""
    files = []
    for _ in range(count):
        staging = blobs.stage()
        staging.write(os.urandom(2048), 0)
        files.append(staging)
    return files


def durable_serial(blobs: BlobStore, files: list[StagingFile], threads: int, round_: int) -> None:
    for staging in files:
        place_blob(blobs, staging, durable=True)


def durable_threads(blobs: BlobStore, files: list[StagingFile], threads: int,
                    round_: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: place_blob(blobs, s, durable=True), files))


def durable_rounds(blobs: BlobStore, files: list[StagingFile], threads: int,
                   round_: int) -> None:
    for start in range(0, len(files), round_):
        blobs.place_batch(files[start:start + round_])


def linked_first_rounds(blobs: BlobStore, files: list[StagingFile], threads: int,
                        round_: int) -> None:
    for start in range(0, len(files), round_):
        blobs.place_batch(files[start:start + round_], patient=False, link_first=True)


def bulk_rounds(blobs: BlobStore, files: list[StagingFile], threads: int, round_: int) -> None:
    for start in range(0, len(files), round_):
        for staging in files[start:start + round_]:
            place_blob(blobs, staging, durable=False)
        blobs.sync()


def not_durable(blobs: BlobStore, files: list[StagingFile], threads: int, round_: int) -> None:
    for staging in files:
        place_blob(blobs, staging, durable=False)


WAYS: dict[str, Callable[[BlobStore, list[StagingFile], int, int], None]] = {
    "durable, one after another": durable_serial,
    "durable, in threads at once": durable_threads,
    "durable, by rounds (place_batch)": durable_rounds,
    "durable, by rounds, linked first": linked_first_rounds,
    "bulk load, one sync per round": bulk_rounds,
    "not durable (no sync at all)": not_durable,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(),
                        help="where the store is made: the filesystem measured")
    parser.add_argument("--files", type=int, default=800)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--round", type=int, default=8, help="files per bulk-load sync")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-place-cost-", dir=args.dir))
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        Store.init(work / "store").close()
        store = Store.open(work / "store")
        try:
            for _ in range(args.repeat):
                for way, place in WAYS.items():
                    files = staged(store.blobs, args.files)
                    os.sync()  # each way starts with nothing of the others left to write
                    start = time.perf_counter()
                    place(store.blobs, files, args.threads, args.round)
                    seconds[way].append(time.perf_counter() - start)
                    for staging in files:
                        staging.discard()
        finally:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_file = {way: [s / args.files * 1e6 for s in runs] for way, runs in seconds.items()}
    if args.json:
        print(json.dumps({"us per file": per_file}, indent=2))
        return 0
    print(f"{args.files} blobs of 2 KiB, {args.repeat} runs each (median; every run)")
    print(f"{'way':34}{'us per file':>14}{'files/s':>10}  runs (us per file)")
    for way, runs in per_file.items():
        median = statistics.median(runs)
        print(f"{way:34}{median:14.0f}{1e6 / median:10.0f}  "
              + " / ".join(f"{r:.0f}" for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
