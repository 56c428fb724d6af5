"""Metrics move when the events happen: in /.casfs/metrics, on the HTTP port, and
through OpenTelemetry when it is installed."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from casfs import metrics
from casfs.store import Store

from .conftest import Mounter


def value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in metrics:\n{text}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False)


def test_the_metrics_file_and_port_move_with_events(mounter: Mounter) -> None:
    port = free_port()
    mnt = mounter.mount(f"metrics_port={port}")
    d = mnt / "arxiv" / "W1"
    d.mkdir(parents=True)
    before = (mnt / ".casfs" / "metrics").read_text()
    assert "# TYPE casfs_dedup_hits_total counter" in before
    assert ".casfs" not in [p.name for p in mnt.iterdir()]
    for name in ("a.pdf", "b.pdf"):
        (d / name).write_bytes(b"the same bytes")
    (d / "b.pdf").unlink()
    (d / "a.pdf").unlink()
    assert casfs(mounter.store_path, "gc", "--grace", "0", "--keep-history", "0",
                 "--apply").returncode == 0
    text = (mnt / ".casfs" / "metrics").read_text()
    assert value(text, 'casfs_dedup_hits_total{resolver="arxiv"}') == 1
    assert value(text, 'casfs_ingested_files_total{resolver="arxiv"}') == 2
    assert value(text, "casfs_gc_removed_total") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        served = response.read().decode()
    assert value(served, "casfs_gc_removed_total") == 1
    with pytest.raises(OSError):
        (mnt / ".casfs" / "metrics").write_text("no")
    with pytest.raises(OSError):
        (mnt / ".casfs" / "metrics").unlink()


def test_verify_failures_are_counted(store_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.pdf"
    src.write_bytes(b"will be damaged")
    assert casfs(store_path, "put", str(src), "--resolver", "r", "--artifact", "a"
                 ).returncode == 0
    blob = next(p for p in (store_path / "cas").rglob("*") if p.is_file())
    blob.chmod(0o644)
    blob.write_bytes(b"damaged")
    assert casfs(store_path, "verify").returncode == 1
    with Store.open(store_path, readonly=True) as store:
        text = metrics.render_prometheus(store.catalog.counters())
    assert value(text, "casfs_verify_failures_total") == 1
    assert value(text, "casfs_blobs_verified_total") == 1


def test_opentelemetry_sees_the_same_counters() -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry import metrics as otel
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    otel.set_meter_provider(MeterProvider(metric_readers=[reader]))
    counters = [("casfs_dedup_hits_total", 'resolver="arxiv"', 3),
                ("casfs_gc_removed_total", "", 2)]
    assert metrics.instrument(lambda: counters)
    data = reader.get_metrics_data()
    assert data is not None
    points = {(m.name, tuple(sorted(p.attributes.items())), p.value)
              for rm in data.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics for p in m.data.data_points}
    assert ("casfs_dedup_hits_total", (("resolver", "arxiv"),), 3) in points
    assert ("casfs_gc_removed_total", (), 2) in points


def test_without_opentelemetry_nothing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert metrics.instrument(lambda: []) is False
    assert "casfs_gc_removed_total 0" in metrics.render_prometheus([])
