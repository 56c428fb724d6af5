"""Time travel's cost: lookups and listings in a view of a past moment against the
live view, on a catalog of many documents with several versions each.

    .venv/bin/python contrib/bench/time_travel.py [--dir DIR] [--documents 1000000]
        [--versions 5] [--catalog sqlite|postgresql] [--json]

Builds a store (on SQLite, or on the tests' throwaway PostgreSQL server) of
--documents documents (10 per artifact directory), each
with --versions versions an hour apart, then mounts it live and as it was between
its second and third versions (`mount --at`), and in each, on a fresh mount: stats
1,000 random documents by path (a lookup each), lists 1,000 random artifact
directories (readdir of their documents), and lists the resolver directory (readdir
of every artifact directory). Prints each per operation and the past/live ratio
(the goal: within 1.5x). Leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import drop_caches, mounted, remove_work, timed  # noqa: E402

from casfs import synthetic  # noqa: E402
from casfs.store import Store  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

PER_ARTIFACT = 10
HOUR = 3600.0


def workloads(mnt: Path, artifacts: int) -> dict[str, float]:
    rng = random.Random(7)
    picks = rng.sample(range(artifacts), min(artifacts, 1000))
    paths = [mnt / "bulk" / f"W{a:08d}" / f"doc{rng.randrange(PER_ARTIFACT):03d}.pdf"
             for a in picks]
    out = {}
    out["stat of a document by path, us"] = timed(
        lambda: [os.stat(p) for p in paths]) / len(paths) * 1e6
    dirs = [mnt / "bulk" / f"W{a:08d}" for a in rng.sample(range(artifacts), len(picks))]
    out["listing of an artifact directory, us"] = timed(
        lambda: [os.listdir(d) for d in dirs]) / len(dirs) * 1e6
    out["listing of the resolver, per entry, us"] = timed(
        lambda: os.listdir(mnt / "bulk")) / artifacts * 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--catalog", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    artifacts = max(args.documents // PER_ARTIFACT, 1)
    work = Path(tempfile.mkdtemp(prefix="casfs-time-travel-", dir=args.dir))
    results: dict[str, dict[str, float]] = {}
    server = PostgresServer().start() if args.catalog == "postgresql" else None
    try:
        store = work / "store"
        url = server.url(server.create_database()) if server else None
        with Store.init(store, catalog=url) as opened:
            started = time.perf_counter()
            synthetic.fill(opened, resolver="bulk", artifacts=artifacts,
                           per_artifact=PER_ARTIFACT, versions=args.versions,
                           version_every=HOUR)
            print(f"{artifacts * PER_ARTIFACT:,} documents x {args.versions} versions in "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        moment = time.time() - (args.versions - 2.5) * HOUR  # between versions 2 and 3
        for label, at in (("live", None), ("past", moment), ("live again", None)):
            drop_caches(2)
            with mounted(store, work / "mnt", at=at) as mnt:
                results[label] = workloads(mnt, artifacts)
    finally:
        if server is not None:
            server.stop()
        remove_work(work)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    live = {k: min(results["live"][k], results["live again"][k]) for k in results["live"]}
    print(f"{'workload':42} {'live':>10} {'past':>10} {'past/live':>10}")
    for key, value in results["past"].items():
        print(f"{key:42} {live[key]:10.1f} {value:10.1f} {value / live[key]:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
