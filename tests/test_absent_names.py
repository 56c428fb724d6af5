"""Names a lookup found absent: answered again from memory for a moment only, and
never after this mount put a file there (mount/absent_names.py)."""

from __future__ import annotations

import time

from casfs.mount.absent_names import FRESH_S, AbsentNames


def test_an_absent_name_is_recent_for_a_moment_and_asking_again_does_not_extend_it() -> None:
    names = AbsentNames()
    names.saw(7, "a.pdf")
    assert names.recent(7, "a.pdf")
    assert not names.recent(7, "b.pdf") and not names.recent(8, "a.pdf")
    time.sleep(FRESH_S / 2)
    names.saw(7, "a.pdf")  # answered from memory: the first time stands
    time.sleep(FRESH_S / 2 + 0.05)
    assert not names.recent(7, "a.pdf")
    names.saw(7, "a.pdf")  # asked the catalog again: a new moment
    assert names.recent(7, "a.pdf")


def test_a_name_made_here_is_no_longer_absent() -> None:
    names = AbsentNames()
    names.saw(7, "a.pdf")
    names.forget(7, "a.pdf")  # a rename or link put a file there
    assert not names.recent(7, "a.pdf")
    assert not names.fresh(7, "a.pdf")
    names.saw(7, "b.pdf")
    assert names.fresh(7, "b.pdf")  # the create takes it, once
    assert not names.fresh(7, "b.pdf") and not names.recent(7, "b.pdf")
