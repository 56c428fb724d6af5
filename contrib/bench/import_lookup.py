"""Benchmark of issue 3: import speed and memory, lookup latency on a large catalog.

    .venv/bin/python contrib/bench/import_lookup.py [--lines 100000] [--records 1000000]

1. Generates a run directory of small files (2-6 KiB) and a manifest with one
   attempt line per three manifest lines, then runs `casfs import-manifest --apply`
   as a child process: lines per second (hashing included) and the child's peak
   RSS, once at a tenth of the size and once at full size (memory must not grow).
2. Fills a catalog with --records documents straight through SQL, then times the
   queries behind `casfs where` and `casfs show` (median and p99 of 200 each), and
   one whole `casfs where` command for comparison (process start dominates it).
With --postgres, the imports go into stores whose catalog is a fresh database of a
PostgreSQL server the benchmark starts (as the tests do), and the lookups are left
out (they fill an SQLite catalog directly).
Everything lives in a temporary directory under --dir, removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from casfs.records import DocumentFilter, Found  # noqa: E402
from casfs.store import Store  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402


def make_run(root: Path, lines: int) -> Path:
    (root / "PDF").mkdir(parents=True)
    rng = random.Random(1)
    with (root / "manifest.jsonl").open("w") as manifest:
        for i in range(lines):
            if i % 4 == 3:
                manifest.write(json.dumps({"record_type": "attempt", "status": "http-200"}) + "\n")
                continue
            data = rng.randbytes(rng.randint(2048, 6144))
            name = f"2024__paper__W{i}.pdf"
            (root / "PDF" / name).write_bytes(data)
            manifest.write(json.dumps({
                "record_type": "manifest", "classification": "pdf", "work_id": f"W{i}",
                "resolver": ("unpaywall", "crossref", "arxiv")[i % 3],
                "url": f"https://pub.example/{i}.pdf", "path": f"/old/run/PDF/{name}",
                "sha256": hashlib.sha256(data).hexdigest(), "content_type": "application/pdf",
                "run_id": "bench", "timestamp": "2025-10-17T16:03:22Z"}) + "\n")
    return root / "manifest.jsonl"


def timed_import(store: Path, manifest: Path, lines: int,
                 catalog: str | None = None) -> dict[str, float]:
    Store.init(store, catalog=catalog).close()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store),
                    "import-manifest", str(manifest), "--apply", "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"lines": lines, "seconds": round(seconds, 2), "lines_per_s": round(lines / seconds),
            "peak_rss_mib": round(max(peak, before) / 1024, 1)}


def fill_catalog(store: Path, records: int) -> None:
    """`records` documents in 1,000 artifacts per resolver chunk, written with plain SQL."""
    Store.init(store).close()
    with Store.open(store) as opened:
        conn = opened.catalog.db  # type: ignore[attr-defined]  # an SQL catalog
        now = time.time()
        conn.execute("BEGIN")
        resolvers = ("unpaywall", "crossref", "arxiv")
        ino = 2
        dirs = {}
        for r in resolvers:
            conn.execute("INSERT INTO directories (ino, parent_ino, name, resolver, "
                         "artifact_id, created_at, mtime_ns, valid_from) "
                         "VALUES (?, 1, ?, ?, NULL, ?, 0, ?)", (ino, r, r, now, now))
            dirs[r] = ino
            ino += 1
        rows = []
        artifacts = set()
        for i in range(records):
            resolver = resolvers[i % 3]
            artifact = f"W{i // 3}"
            if (resolver, artifact) not in artifacts:
                artifacts.add((resolver, artifact))
                conn.execute("INSERT INTO directories (ino, parent_ino, name, resolver, "
                             "artifact_id, created_at, mtime_ns, valid_from) "
                             "VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                             (ino, dirs[resolver], artifact, resolver, artifact, now, now))
                ino += 1
            sha = hashlib.sha256(str(i).encode()).hexdigest()
            rows.append((ino, artifact, resolver, f"https://pub.example/{i}.pdf",
                         f"{i}.pdf", "application/pdf", 4096, sha, f"file:///x/{sha}",
                         "bench", now, now, int(now * 1e9), now))
            ino += 1
            if len(rows) == 50_000:
                _insert(conn, rows)
                rows = []
        _insert(conn, rows)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'next_ino'", (ino,))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")


def _insert(conn, rows):  # type: ignore[no-untyped-def]
    conn.executemany("INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, 4096, ?)",
                     [(r[7], r[10]) for r in rows])
    conn.executemany(
        "INSERT INTO documents (ino, artifact_id, resolver, source_url, basename, "
        "content_type, bytes, sha256, storage_uri, run_id, created_at, updated_at, mtime_ns, "
        "valid_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def lookup_latency(store: Path, records: int) -> dict[str, float]:
    rng = random.Random(2)
    out: dict[str, float] = {}
    with Store.open(store, readonly=True) as opened:
        catalog = opened.catalog
        def where(i: int) -> list[Found]:
            prefix = hashlib.sha256(str(i).encode()).hexdigest()[:10]
            sha = catalog.blobs_with_prefix(prefix)[0]
            return list(catalog.search(DocumentFilter(sha256=sha)))

        def show(i: int) -> list[Found]:
            return list(catalog.search(DocumentFilter(artifact_id=f"W{i // 3}")))

        for name, query in (("where_ms", where), ("show_ms", show)):
            times = []
            for _ in range(200):
                i = rng.randrange(records)
                start = time.perf_counter()
                assert query(i)
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            out[name + "_median"] = round(statistics.median(times), 3)
            out[name + "_p99"] = round(times[int(len(times) * 0.99) - 1], 3)
    sha = hashlib.sha256(str(records // 2).encode()).hexdigest()[:12]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), "where", sha],
                   check=True, stdout=subprocess.DEVNULL)
    out["where_command_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--postgres", action="store_true",
                        help="import into PostgreSQL catalogs (a server started here)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-bench-", dir=args.dir))
    os.environ["CASFS_CONFIG"] = str(work / "config.toml")
    server: PostgresServer | None = None
    try:
        if args.postgres:
            server = PostgresServer().start()
        results = {}
        for label, lines in (("import_small", args.lines // 10), ("import", args.lines)):
            manifest = make_run(work / f"run-{label}", lines)
            catalog = server.url(server.create_database()) if server else None
            results[label] = timed_import(work / f"store-{label}", manifest, lines, catalog)
            print(label, results[label], flush=True)
        if server is None:
            fill_catalog(work / "big", args.records)
            results["lookup"] = lookup_latency(work / "big", args.records)
            results["lookup"]["records"] = args.records
            print("lookup", results["lookup"], flush=True)
        print(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
