"""Reading the legacy downloader's `manifest.jsonl` (see docs/docstokg-manifest.md).

`read_manifest` yields one `Line` per line of the file: an importable `Entry`, a
`Skip` (a line that is not about a stored file: attempts, summaries, misses,
dry runs) or a `Problem` (a line that should have been importable and is not,
with the reason). Nothing here touches the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casfs import naming
from casfs.blobs.staging import is_sha256_hex
from casfs.errors import InvalidName

IMPORTABLE = frozenset({"pdf", "html", "xml"})
MAX_LINE_BYTES = 1 << 20  # a line longer than this is refused, not parsed


@dataclass(frozen=True)
class Entry:
    line: int
    artifact_id: str
    source_url: str
    resolver: str
    path: Path
    basename: str
    content_type: str | None
    sha256: str | None  # as the line claims it; checked against the file's bytes
    content_length: int | None
    run_id: str | None
    created_at: float | None


@dataclass(frozen=True)
class Skip:
    line: int
    reason: str  # e.g. "record_type attempt", "classification miss", "dry run"


@dataclass(frozen=True)
class Problem:
    line: int
    reason: str


Line = Entry | Skip | Problem


def read_manifest(manifest: Path, start_line: int = 1) -> Iterator[tuple[Line, int]]:
    """Yield (line outcome, byte offset after the line), from `start_line` on."""
    locator = Locator(str(manifest.parent))
    with manifest.open("rb") as f:
        offset = 0
        for number, raw in enumerate(f, start=1):
            offset += len(raw)
            if number < start_line:
                continue
            if not raw.strip():
                yield Skip(number, "blank line"), offset
                continue
            yield parse_line(number, raw, locator), offset


def parse_line(number: int, raw: bytes, locator: Locator) -> Line:
    if len(raw) > MAX_LINE_BYTES:
        return Problem(number, f"line is {len(raw):,} bytes, over {MAX_LINE_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Problem(number, f"not UTF-8 text (byte {e.start}): binary data?")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return Problem(number, f"malformed JSON: {e}")
    if not isinstance(data, dict):
        return Problem(number, f"a line must be a JSON object, not {type(data).__name__}")
    try:
        return _entry(number, data, locator)
    except _Bad as e:
        return Problem(number, str(e))


class _Bad(Exception):
    pass


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...],
         required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise _Bad(f"missing key '{key}'")
        return None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise _Bad(f"key '{key}' has a {type(value).__name__}, not a "
                   f"{getattr(kind, '__name__', 'value of the right type')}")
    if isinstance(value, str) and ("\0" in value or (required and not value.strip())):
        raise _Bad(f"key '{key}' is empty or holds a NUL")
    return value


def _entry(number: int, data: dict[str, Any], locator: Locator) -> Line:
    record_type = _get(data, "record_type", str, required=True)
    if record_type != "manifest":
        return Skip(number, f"record_type {record_type}")
    classification = _get(data, "classification", str)
    if classification not in IMPORTABLE:
        return Skip(number, f"classification {classification}")
    if _get(data, "dry_run", bool):
        return Skip(number, "dry run")
    artifact_id = _get(data, "artifact_id", str) or _get(data, "work_id", str, required=True)
    source_url = _get(data, "source_url", str) or _get(data, "url", str, required=True)
    resolver = _get(data, "resolver", str, required=True)
    for identifier in (artifact_id, resolver):
        try:
            naming.dir_name_for(identifier)
        except InvalidName as e:
            raise _Bad(str(e)) from None
    raw_path = _get(data, "path", str)
    if raw_path is None:
        raise _Bad("missing file: 'path' is null")
    sha256 = _get(data, "sha256", str)
    if sha256 is not None:
        sha256 = sha256.lower()
        if not is_sha256_hex(sha256):
            raise _Bad(f"key 'sha256' is not a SHA-256 hex digest: {sha256[:80]!r}")
    content_length = _get(data, "content_length", int)
    if content_length is not None and content_length < 0:
        raise _Bad("key 'content_length' is negative")
    return Entry(
        line=number, artifact_id=artifact_id, source_url=source_url, resolver=resolver,
        path=locator.locate(raw_path),
        basename=naming.sanitize_basename(os.path.basename(raw_path))
        or naming.basename_from_url(source_url),
        content_type=_get(data, "content_type", str), sha256=sha256,
        content_length=content_length, run_id=_get(data, "run_id", str),
        created_at=_timestamp(_get(data, "timestamp", str)))


class Locator:
    """Finds the file of a line: as written, or under the manifest's own directory
    (run directories get moved; their manifests keep the old absolute paths).

    Where a folder named by the lines was found is remembered, so a moved run
    costs one stat a line, not one per candidate.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self._moved: dict[str, str] = {}  # folder as written -> folder where files are

    def locate(self, raw_path: str) -> Path:
        folder, name = os.path.split(raw_path)
        known = self._moved.get(folder)
        if known is not None and os.path.isfile(os.path.join(known, name)):
            return Path(known, name)
        candidates = [os.path.join(self.base, raw_path)]  # join keeps an absolute path
        if os.path.basename(folder):
            candidates.append(os.path.join(self.base, os.path.basename(folder), name))
        candidates += [os.path.join(self.base, "PDF", name), os.path.join(self.base, name)]
        for candidate in candidates:
            if os.path.isfile(candidate):
                if len(self._moved) < 10_000:
                    self._moved[folder] = os.path.dirname(candidate)
                return Path(candidate)
        return Path(candidates[0])


def _timestamp(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Bad(f"key 'timestamp' is not an ISO 8601 time: {value[:80]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the downloader wrote UTC
    return moment.timestamp()
