"""Names a lookup just found absent, so that the create the kernel sends next does
not ask the catalog the same question again.

The kernel looks a name up before it creates it (FUSE's atomic open), and a create
must know whether the name exists (to open that file instead). On PostgreSQL the
second question is a second round trip for every new file. The answer of the lookup
moments before is as good: between either answer and the create, another host may
make the name anyway, and the registration at close settles that race (the newer
close wins, the older version stays in history) whichever answer was used.
"""

from __future__ import annotations

import time

FRESH_S = 0.2  # a lookup older than this is asked again
MAX_NAMES = 10_000


class AbsentNames:
    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], float] = {}

    def saw(self, parent_ino: int, name: str) -> None:
        if len(self._seen) >= MAX_NAMES:
            self._seen.clear()
        self._seen[(parent_ino, name)] = time.monotonic()

    def fresh(self, parent_ino: int, name: str) -> bool:
        """True once when a lookup found the name absent less than FRESH_S ago."""
        when = self._seen.pop((parent_ino, name), None)
        return when is not None and time.monotonic() - when < FRESH_S
