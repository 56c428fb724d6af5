"""How commands print: JSON for scripts, sizes for people."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from casfs.records import Found


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


RECORD_FIELDS = ("id", "artifact_id", "resolver", "source_url", "sha256", "bytes",
                 "content_type", "basename", "run_id", "created_at", "updated_at")


def record(found: Found) -> dict[str, Any]:
    """The JSON shape of a document, the same for every lookup command."""
    values = asdict(found.document)
    out = {key: values[key] for key in RECORD_FIELDS}
    out["created_at"] = iso_time(out["created_at"])
    out["updated_at"] = iso_time(out["updated_at"])
    out["path"] = found.path
    return out


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, as the manifests write them."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
