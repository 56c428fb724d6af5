"""Names a lookup just found absent, so that the lookup and the create the kernel
sends next do not ask the catalog the same question again.

The kernel looks a name up before it creates it (FUSE's atomic open), and a create
must know whether the name exists (to open that file instead). On PostgreSQL the
second question is a second round trip for every new file. The answer of the lookup
moments before is as good: between either answer and the create, another host may
make the name anyway, and the registration at close settles that race (the newer
close wins, the older version stays in history) whichever answer was used.

`cp` asks three times: it stats the name (a lookup), then opens it with O_CREAT |
O_EXCL, for which the kernel looks the name up again whatever it keeps (FUSE
revalidates every entry for an exclusive create), then creates it. The second
lookup is answered from the first, as the create is; the kernel itself keeps an
absent name longer than that (attributes.ABSENT_FOR_S).
"""

from __future__ import annotations

import time

FRESH_S = 0.2  # a lookup older than this is asked again
MAX_NAMES = 10_000


class AbsentNames:
    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], float] = {}

    def saw(self, parent_ino: int, name: str) -> None:
        """A lookup found `name` absent. While `recent`, the first time stands: an
        answer given from it is not a new one, so a name looked up again and again
        is asked again every FRESH_S."""
        if self.recent(parent_ino, name):
            return
        if len(self._seen) >= MAX_NAMES:
            self._seen.clear()
        self._seen[(parent_ino, name)] = time.monotonic()

    def forget(self, parent_ino: int, name: str) -> None:
        """This mount put a file at `name` (a rename, a link): no longer absent."""
        self._seen.pop((parent_ino, name), None)

    def recent(self, parent_ino: int, name: str) -> bool:
        """Whether a lookup found the name absent less than FRESH_S ago (kept for
        the create)."""
        when = self._seen.get((parent_ino, name))
        return when is not None and time.monotonic() - when < FRESH_S

    def fresh(self, parent_ino: int, name: str) -> bool:
        """True once when a lookup found the name absent less than FRESH_S ago."""
        when = self._seen.pop((parent_ino, name), None)
        return when is not None and time.monotonic() - when < FRESH_S
