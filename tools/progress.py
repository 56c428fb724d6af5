"""A one-line progress display on a terminal; silent when stderr is not one."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .output import human_bytes


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, *, done: float, total: float, lines: int, moved_bytes: int,
               unit: str = "lines", force: bool = False) -> None:
        """Show lines, bytes, rate and ETA; `done`/`total` measure the whole job."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        fraction = done / total if total else 1.0
        eta = (elapsed / fraction - elapsed) if fraction > 0 else 0.0
        text = (f"{fraction:6.1%}  {lines:,} {unit}  {human_bytes(moved_bytes)}  "
                f"{lines / elapsed:,.0f} {unit}/s  {human_bytes(moved_bytes / elapsed)}/s  "
                f"ETA {_duration(eta)}")
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
