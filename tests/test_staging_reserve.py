"""The staging files a mount makes ahead of its creates (mount/staging_reserve.py):
real files in a temporary directory, named so that what is left behind shows."""

import errno
import time
from pathlib import Path

import pytest
import trio

from casfs.blobs.staging import Stager, StagingFile
from casfs.mount.staging_reserve import StagingReserve


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_creates_take_files_made_ahead_and_close_removes_the_rest(tmp_path: Path) -> None:
    stager = Stager(tmp_path, unnamed=False)
    reserve = StagingReserve(stager.stage, keep=4, refill_at=2)

    async def take() -> StagingFile:
        return await reserve.take()

    first = trio.run(take)  # none ready yet: made for this take
    assert reserve.made_here == 1
    wait_until(lambda: len(list(tmp_path.glob("*.part"))) == 1 + 4)
    taken = [trio.run(take) for _ in range(3)]
    assert reserve.made_here == 1  # all three were ready
    for staging in [first, *taken]:
        staging.write(b"bytes of its own", 0)
        assert staging.path is not None and staging.path.read_bytes() == b"bytes of its own"
    assert len({s.path for s in [first, *taken]}) == 4
    # Refilled once two or fewer were left (after the second take), back up to 4; the
    # third take may come before or after that refill.
    wait_until(lambda: len(list(tmp_path.glob("*.part"))) - 4 in (3, 4))

    reserve.close()
    assert sorted(tmp_path.glob("*.part")) == sorted(s.path for s in [first, *taken]
                                                     if s.path is not None)
    for staging in [first, *taken]:
        staging.discard()
    assert list(tmp_path.iterdir()) == []


def test_an_error_making_a_staging_file_reaches_the_create_and_passes(tmp_path: Path) -> None:
    stager = Stager(tmp_path, unnamed=False)
    failing = True

    def make() -> StagingFile:
        if failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return stager.stage()

    reserve = StagingReserve(make, keep=2, refill_at=1)
    with pytest.raises(OSError) as raised:
        trio.run(reserve.take)
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    failing = False  # the disk has room again: the next take works, the thread refills
    staging = trio.run(reserve.take)
    staging.write(b"x", 0)
    wait_until(lambda: len(list(tmp_path.glob("*.part"))) == 1 + 2, timeout=5)
    reserve.close()
    staging.discard()
    assert list(tmp_path.iterdir()) == []
