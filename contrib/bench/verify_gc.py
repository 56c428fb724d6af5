"""Benchmark of issue 4: verify throughput against sha256sum, gc preview on many blobs.

    .venv/bin/python contrib/bench/verify_gc.py [--blobs 1024] [--size 1M] [--records 1000000]

1. Writes --blobs random blobs of --size into a fresh store, then hashes all of
   them with `sha256sum` (via xargs -P J) and with `casfs verify --all --jobs J`,
   for J = 1 and 2, each after one warm-up pass, so both read from the page cache.
2. Fills a catalog with --records blobs and documents (1% of them garbage: closed
   records older than the retention window), then times `casfs gc` (a preview).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from casfs.store import Store


def timed(command: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


def make_blobs(store_path: Path, count: int, size: int) -> int:
    Store.init(store_path).close()
    total = 0
    with Store.open(store_path) as store:
        rows = []
        for _ in range(count):
            data = os.urandom(size)
            sha = hashlib.sha256(data).hexdigest()
            path = store.blobs.path(sha)  # type: ignore[attr-defined]  # the local store
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o444)
            rows.append((sha, size, time.time()))
            total += size
        with store.catalog.write_transaction():
            store.catalog.db.executemany(  # type: ignore[attr-defined]
                "INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, ?, ?)", rows)
    return total


def verify_vs_sha256sum(store_path: Path, total: int) -> list[dict[str, object]]:
    files = "\n".join(str(p) for p in (store_path / "cas").rglob("*") if p.is_file())
    out = []
    for jobs in (1, 2):
        sha256sum = ["xargs", "-P", str(jobs), "-n", "64", "sha256sum"]
        casfs = [sys.executable, "-m", "casfs.tools", "--store", str(store_path), "verify",
                 "--all", "--jobs", str(jobs)]
        timed(sha256sum, input=files.encode())  # warm the page cache
        native = min(timed(sha256sum, input=files.encode()) for _ in range(2))
        ours = min(timed(casfs) for _ in range(2))
        out.append({"jobs": jobs, "sha256sum_MiB_s": round(total / native / 2**20),
                    "verify_MiB_s": round(total / ours / 2**20),
                    "ratio": round(native / ours, 2)})
        print(out[-1], flush=True)
    return out


def gc_preview(store_path: Path, records: int) -> dict[str, object]:
    Store.init(store_path).close()
    now = time.time()
    with Store.open(store_path) as store:
        conn = store.catalog.db  # type: ignore[attr-defined]  # an SQL catalog
        with store.catalog.write_transaction():
            conn.execute("INSERT INTO directories (ino, parent_ino, name, resolver, "
                         "artifact_id, created_at, mtime_ns) VALUES (2, 1, 'r', 'r', NULL, 0, 0)")
            conn.execute("INSERT INTO directories (ino, parent_ino, name, resolver, "
                         "artifact_id, created_at, mtime_ns) VALUES (3, 2, 'a', 'r', 'a', 0, 0)")
            batch_b, batch_d = [], []
            for i in range(records):
                sha = hashlib.sha256(str(i).encode()).hexdigest()
                batch_b.append((sha, 100, now - 10 * 86400))
                closed = now - 40 * 86400 if i % 100 == 0 else None  # 1% garbage
                batch_d.append((10 + i, sha, f"{i}.pdf", closed, closed and "unlink"))
                if len(batch_b) == 50_000:
                    _insert(conn, batch_b, batch_d, now)
                    batch_b, batch_d = [], []
            _insert(conn, batch_b, batch_d, now)
        conn.execute("ANALYZE")
    seconds = timed([sys.executable, "-m", "casfs.tools", "--store", str(store_path), "gc"])
    result = {"blobs": records, "garbage": records // 100, "gc_preview_s": round(seconds, 1)}
    print(result, flush=True)
    return result


def _insert(conn, blobs, docs, now):  # type: ignore[no-untyped-def]
    conn.executemany("INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, ?, ?)", blobs)
    conn.executemany(
        "INSERT INTO documents (ino, artifact_id, resolver, source_url, basename, bytes, "
        "sha256, storage_uri, created_at, updated_at, mtime_ns, valid_from, valid_to, change) "
        f"VALUES (?1, 'a', 'r', NULL, ?3, 100, ?2, 'file:///x', {now}, {now}, 0, {now}, ?4, ?5)",
        docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=1024)
    parser.add_argument("--size", default="1M")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    args = parser.parse_args()
    size = int(args.size.rstrip("MKk")) * {"M": 2**20, "K": 2**10, "k": 2**10}.get(
        args.size[-1], 1)
    work = Path(tempfile.mkdtemp(prefix="casfs-bench-", dir=args.dir))
    os.environ["CASFS_CONFIG"] = str(work / "config.toml")
    try:
        total = make_blobs(work / "verify", args.blobs, size)
        results = {"verify": verify_vs_sha256sum(work / "verify", total),
                   "gc": gc_preview(work / "gc", args.records)}
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
