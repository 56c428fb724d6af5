"""A bulk load's closes, answered before their files are registered.

In a bulk load (`-o durability=batch`) a close no longer promises "durable": that
comes with the next durability round. It still waited for its file's registration
(placing the blob, and a commit shared with the closes that arrived meanwhile), and
a single writer, whose next file waits for that close, got one commit a file. Here
the close hands its file to a task and returns; the task registers it while the
writer goes on, so the files closed meanwhile share the next commit. Measured
(README, "A bulk load's closes answered before registration"): one writer of 2 KiB
files, a median of 904 files/s against 657 waiting for each registration, in
alternating runs.

Until its task ends, the file stays as an open file of the mount: shown by name,
with its size, readable (a read waits for the registration, which holds the file's
lock). Whatever would change it waits (`settle`): writes and truncates for the
lock, and rename, unlink, link, setattr and extended attributes (read too: the
content type a new file gets is decided by its registration) for the task, so a
`mv x.part x.pdf` or a `touch -d` right after the close applies to what was
registered (`tests/test_stateful.py` runs its model on a bulk load for this).

What a crash may lose is what a bulk load lost before: the closes since the last
durability round, which first waits for every registration pending when it
starts (`drained`), so its marker still says "everything closed before this moment
is on disk". The daemon waits for them all at unmount.

A registration that fails after its close returned cannot fail that close: it is
logged with the file's path, counted, and reported as EIO by the next fsync of every
descriptor of the mount that was open when it failed, once each, as Linux reports a
failed writeback (its `errseq`): a descriptor opened later hears of it only if no
fsync has yet. At most `MAX_PENDING` registrations wait at once; a close beyond them
waits for its own, as before.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from .open_files import OpenFile

log = logging.getLogger("casfs.mount")

MAX_PENDING = 64  # closes answered and not yet registered; a few rounds' worth
GATHER_S = 0.005  # a bulk load's registration rounds wait this long for more (rounds.py)


class ClosesBehind:
    def __init__(self, register: Callable[[OpenFile], Awaitable[None]],
                 release: Callable[[OpenFile], None]) -> None:
        self._register = register  # finalize one file, its lock held; raises on failure
        self._release = release  # the handle the task held
        self._pending: dict[int, trio.Event] = {}  # by inode
        self.answered = 0  # closes answered before their registration
        self.failed = 0  # of those, registrations that failed
        self._reported = 0  # of those, how many some fsync has reported

    def take(self, file: OpenFile) -> bool:
        """Register `file` in a task of its own and return True; False when the
        close must register it itself (a write failed, or too many are pending)."""
        if not file.dirty or file.failed_errno is not None or file.unlinked or \
                file.ino in self._pending or len(self._pending) >= MAX_PENDING:
            return False
        done = self._pending[file.ino] = trio.Event()
        file.open_handles += 1  # the task's: the file stays open until it ends
        self.answered += 1
        trio.lowlevel.spawn_system_task(self._registering, file, done)
        return True

    async def settle(self, ino: int) -> None:
        """Return once the registration of `ino` taken here, if any, has ended."""
        done = self._pending.get(ino)
        if done is not None:
            await done.wait()

    async def drained(self) -> None:
        """Return once every registration pending at this call has ended."""
        for done in list(self._pending.values()):
            await done.wait()

    def failures_known(self) -> int:
        """How many failures a descriptor opened now has heard of: those some fsync
        has reported (one nobody has heard of yet is reported to it too)."""
        return self._reported

    def failures_since(self, known: int) -> bool:
        """Whether registrations failed since a descriptor heard of `known` of them
        (its fsync then reports EIO, and the caller records `failed` as known)."""
        if self.failed <= known:
            return False
        self._reported = self.failed
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _registering(self, file: OpenFile, done: trio.Event) -> None:
        try:
            await self._register(file)
        except Exception as e:  # a system task must not raise: the mount would end
            self.failed += 1
            log.error("registering %r (inode %d) failed after its close had returned; "
                      "the file is gone: %s", file.name, file.ino, _described(e))
        finally:
            del self._pending[file.ino]
            done.set()
            self._release(file)


def _described(error: Exception) -> str:
    code = getattr(error, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    return str(error) or name or type(error).__name__
