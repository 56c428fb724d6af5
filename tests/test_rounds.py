"""Group commit's scheduler: items that arrive while a round runs share the next one,
each gets its own answer, and nobody is left waiting (mount/rounds.py)."""

import threading
import time
from collections.abc import Callable

import outcome
import pytest
import trio

from casfs.mount.rounds import MAX_ROUND, Rounds


async def in_thread(loop: Callable[[None], None]) -> None:
    await trio.to_thread.run_sync(loop, None)


def test_items_arriving_during_a_round_share_the_next_one() -> None:
    seen: list[list[int]] = []

    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        seen.append(items)
        time.sleep(0.05)
        return [outcome.Value(i * 10) for i in items]

    async def main() -> dict[int, int]:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread)
        answers: dict[int, int] = {}

        async def one(i: int) -> None:
            answers[i] = await rounds.submit(i)

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
                await trio.sleep(0)  # the first starts a round alone
        return answers

    answers = trio.run(main)
    assert answers == {i: i * 10 for i in range(8)}
    assert seen[0] == [0] and sorted(i for items in seen[1:] for i in items) == list(range(1, 8))
    assert len(seen) == 2


def test_each_item_gets_its_own_error_and_a_failed_round_fails_all_of_its_items() -> None:
    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        if 99 in items:
            raise RuntimeError("the round broke")
        return [outcome.Error(ValueError(i)) if i % 2 else outcome.Value(i) for i in items]

    async def main() -> None:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread)
        assert await rounds.submit(2) == 2
        with pytest.raises(ValueError):
            await rounds.submit(3)
        with pytest.raises(RuntimeError):
            await rounds.submit(99)
        assert await rounds.submit(4) == 4  # the rounds go on

    trio.run(main)


def test_every_item_of_a_failed_round_gets_the_error() -> None:
    """An answer can be read once: each item of a round that failed (in it, or before
    its thread started) gets an outcome of its own, not one shared."""
    started = threading.Event()

    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        if items == [0]:
            started.wait(5)  # hold the first round until the others wait
            return [outcome.Value(0)]
        raise RuntimeError("the round broke")

    async def main() -> list[str]:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread)
        seen: list[str] = []

        async def submit(item: int) -> None:
            try:
                seen.append(str(await rounds.submit(item)))
            except RuntimeError as e:
                seen.append(str(e))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, 0)
            await trio.sleep(0.05)
            for item in (1, 2, 3):
                nursery.start_soon(submit, item)
            await trio.sleep(0.05)
            started.set()
        return seen

    assert sorted(trio.run(main)) == ["0"] + ["the round broke"] * 3


def test_more_items_than_a_round_takes_all_get_answered() -> None:
    sizes: list[int] = []

    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        sizes.append(len(items))
        time.sleep(0.01)
        return [outcome.Value(i) for i in items]

    async def main() -> list[int]:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread)
        got: list[int] = []

        async def one(i: int) -> None:
            got.append(await rounds.submit(i))

        async with trio.open_nursery() as nursery:
            for i in range(3 * MAX_ROUND):
                nursery.start_soon(one, i)
        return got

    got = trio.run(main)
    assert sorted(got) == list(range(3 * MAX_ROUND))
    assert max(sizes) == MAX_ROUND


def test_a_waiter_cancelled_in_line_does_not_strand_the_others() -> None:
    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        time.sleep(0.05)
        return [outcome.Value(i) for i in items]

    async def main() -> list[int]:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread)
        got: list[int] = []

        async def one(i: int) -> None:
            got.append(await rounds.submit(i))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 0)  # leads the first round
            await trio.sleep(0.01)
            with trio.move_on_after(0.01):
                await rounds.submit(1)  # in line, cancelled before its round
            nursery.start_soon(one, 2)
        return got

    async def bounded() -> list[int]:
        with trio.fail_after(5):  # a stranded waiter would hang here
            return await main()

    assert sorted(trio.run(bounded)) == [0, 2]


def test_rounds_run_back_to_back_in_one_trip_to_a_thread() -> None:
    threads: set[int] = set()

    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        threads.add(threading.get_ident())
        time.sleep(0.05)
        return [outcome.Value(i) for i in items]

    async def main(lead_for: float) -> Rounds[None, int, int]:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread, lead_for=lead_for)

        async def one(i: int) -> None:
            assert await rounds.submit(i) == i

        async with trio.open_nursery() as nursery:
            for i in range(3):  # each arrives while the round before it runs
                nursery.start_soon(one, i)
                await trio.sleep(0.03)
        return rounds

    kept = trio.run(main, 10.0)
    assert (kept.rounds, kept.items, kept.trips) == (3, 3, 1)  # the thread went on
    assert len(threads) == 1
    handed_on = trio.run(main, 0.0)  # no time to lead: each round its own trip
    assert (handed_on.rounds, handed_on.items, handed_on.trips) == (3, 3, 3)


def test_a_thread_that_cannot_start_fails_its_round_and_the_next_ones_run() -> None:
    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        return [outcome.Value(i) for i in items]

    broken = [True]

    async def flaky(loop: Callable[[None], None]) -> None:
        if broken[0]:
            broken[0] = False
            raise ConnectionError("no connection for the round")
        await in_thread(loop)

    async def main() -> None:
        rounds: Rounds[None, int, int] = Rounds(run_round, flaky)
        with pytest.raises(ConnectionError):
            await rounds.submit(1)
        assert await rounds.submit(2) == 2

    trio.run(main)


def test_with_gather_items_arriving_one_at_a_time_share_rounds() -> None:
    """A bulk load's one writer: its closes arrive one by one, each after the round
    before it ended. Without `gather` each is a round of its own; with it, a round
    (the first one, and those the thread runs back to back) waits for the next
    ones and takes them together."""
    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        return [outcome.Value(i) for i in items]

    async def main(gather: float) -> Rounds[None, int, int]:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread, lead_for=10.0,
                                                gather=gather)

        async def one(i: int) -> None:
            assert await rounds.submit(i) == i

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
                await trio.sleep(0.01)
        return rounds

    alone = trio.run(main, 0.0)
    assert (alone.rounds, alone.items) == (20, 20)
    gathered = trio.run(main, 0.2)
    assert gathered.items == 20
    assert gathered.rounds <= 4, gathered.rounds  # about 200 ms of arrivals a round
    assert gathered.trips == 1  # the back-to-back rounds waited in their thread


def test_a_lead_that_has_run_out_hands_on_without_gathering_again() -> None:
    """Past its lead's deadline, a round's thread hands the lead on at once: the next
    leader gathers, so a wait in the thread too would make items wait twice. A lone
    item waits one gather (here 1 s) before its round, not two."""
    def run_round(_: None, items: list[int]) -> list[outcome.Outcome[int]]:
        return [outcome.Value(i) for i in items]

    async def main() -> float:
        rounds: Rounds[None, int, int] = Rounds(run_round, in_thread, lead_for=0.0,
                                                gather=1.0)
        start = trio.current_time()
        assert await rounds.submit(7) == 7
        return trio.current_time() - start

    assert 1.0 <= trio.run(main) < 1.9
