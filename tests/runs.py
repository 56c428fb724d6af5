"""Generated legacy run directories for import tests: real files, real manifests."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    root: Path
    lines: list[bytes] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # key "resolver/work_id/url" -> bytes

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.jsonl"

    def add_file(self, work_id: str, resolver: str = "unpaywall", *, data: bytes | None = None,
                 folder: str = "PDF", classification: str = "pdf", old_root: str | None = None,
                 url: str | None = None, with_sha: bool = True, **extra: Any) -> dict[str, Any]:
        data = os.urandom(2000) if data is None else data
        url = url or f"https://pub.example/{resolver}/{work_id}.pdf"
        name = f"2024__paper__{work_id}.{'pdf' if folder == 'PDF' else 'html'}"
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / folder / name).write_bytes(data)
        base = old_root or str(self.root)
        line = {"record_type": "manifest", "classification": classification,
                "work_id": work_id, "resolver": resolver, "url": url,
                "path": f"{base}/{folder}/{name}", "content_type": "application/pdf",
                "sha256": hashlib.sha256(data).hexdigest() if with_sha else None,
                "content_length": len(data), "run_id": "run-1", "dry_run": False,
                "schema_version": 5, "timestamp": "2025-10-17T16:03:22.389293Z"}
        line.update(extra)
        self.add_line(line)
        self.files[f"{resolver}/{work_id}/{url}"] = data
        return line

    def add_line(self, line: dict[str, Any] | bytes) -> int:
        raw = line if isinstance(line, bytes) else json.dumps(line, sort_keys=True).encode()
        self.lines.append(raw)
        return len(self.lines)

    def write(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest.write_bytes(b"\n".join(self.lines) + b"\n")
        return self.manifest
