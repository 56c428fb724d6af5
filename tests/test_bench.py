"""`casfs bench` runs end to end at a small size and leaves nothing behind.
Speed is judged from its table, never here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import needs_fuse


@needs_fuse
def test_bench_smoke(tmp_path: Path) -> None:
    work = tmp_path / "bench"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "casfs.tools", "bench", "--dir", str(work), "--size", "4M",
         "--files", "60", "--records", "2000", "--json"],
        capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    workloads = [row["workload"] for row in report["rows"]]
    for expected in ("ingest", "first read", "warm re-read", "small files", "cp at once",
                     "bulk load", "stat of every",
                     "ls -l", "find", "lookup per path", "readdir per entry"):
        assert any(expected in w for w in workloads), expected
    assert all(row["mount_s"] > 0 for row in report["rows"])
    assert set(report["daemon_peak_rss_mib"]) == {"main", "scale-small", "scale-large"}
    assert all(mib > 0 for mib in report["daemon_peak_rss_mib"].values())
    assert os.listdir(work) == []
    with open("/proc/mounts") as f:
        assert str(work) not in f.read()
