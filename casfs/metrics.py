"""Metrics: the catalog's counters in the Prometheus text format, and to OpenTelemetry.

Every process that ingests, verifies or collects adds to counters kept in the
catalog (`counters` table), so the totals are the store's, not one process's. A
mount shows them at `/.casfs/metrics` and, when asked, on an HTTP port. Where the
OpenTelemetry API is installed, `instrument` registers observable counters that
read the same totals, so an operator's OpenTelemetry SDK exports them too; without
it nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Counter = tuple[str, str, int]  # name, Prometheus label text, value

HELP = {
    "casfs_dedup_hits_total": "Files ingested whose bytes were already stored.",
    "casfs_ingested_files_total": "Files registered (new documents and new versions).",
    "casfs_ingested_bytes_total": "Bytes of the files registered.",
    "casfs_gc_removed_total": "Blobs deleted by gc.",
    "casfs_gc_removed_bytes_total": "Bytes of the blobs deleted by gc.",
    "casfs_verify_failures_total": "Blobs found missing or not matching their hash.",
    "casfs_blobs_verified_total": "Blobs re-hashed by verify.",
    "casfs_verified_bytes_total": "Bytes re-hashed by verify.",
    "casfs_durability_rounds_total": "Rounds that made a bulk load's closes durable.",
}


def render_prometheus(counters: Iterable[Counter],
                      gauges: Iterable[tuple[str, str, float]] = ()) -> str:
    """Counters (and gauges, with their help text) in the Prometheus text format."""
    by_name: dict[str, list[tuple[str, int]]] = {name: [] for name in HELP}
    for name, labels, count in counters:
        by_name.setdefault(name, []).append((labels, count))
    lines = []
    for name, samples in by_name.items():
        lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} counter"]
        lines += [f"{name}{{{labels}}} {count}" if labels else f"{name} {count}"
                  for labels, count in samples or [("", 0)]]
    for name, help_text, level in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {level:g}"]
    return "\n".join(lines) + "\n"


def instrument(read_counters: Callable[[], list[Counter]]) -> bool:
    """Register observable OpenTelemetry counters reading `read_counters`.

    Returns False (and does nothing) when the OpenTelemetry API is not installed.
    `read_counters` is called from the SDK's export thread.
    """
    try:
        from opentelemetry import metrics as otel
    except ImportError:
        return False
    meter = otel.get_meter("casfs")

    def observe(name: str) -> Callable[[Any], list[Any]]:
        def callback(options: Any) -> list[Any]:
            return [otel.Observation(value, _parse_labels(labels))
                    for n, labels, value in read_counters() if n == name]
        return callback

    for name, description in HELP.items():
        meter.create_observable_counter(name, callbacks=[observe(name)],
                                        description=description)
    return True


def _parse_labels(text: str) -> dict[str, str]:
    """resolver="arxiv" -> {"resolver": "arxiv"} (the labels casfs writes)."""
    out = {}
    for part in filter(None, text.split('",')):
        key, _, value = part.partition('="')
        out[key] = value.rstrip('"').replace('\\"', '"').replace("\\\\", "\\")
    return out
