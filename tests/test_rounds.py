"""Group commit's scheduler: items that arrive while a round runs share the next one,
each gets its own answer, and nobody is left waiting (mount/rounds.py)."""

import outcome
import pytest
import trio

from casfs.mount.rounds import MAX_ROUND, Rounds


def test_items_arriving_during_a_round_share_the_next_one() -> None:
    seen: list[list[int]] = []

    async def run_round(items: list[int]) -> list[outcome.Outcome[int]]:
        seen.append(items)
        await trio.sleep(0.05)
        return [outcome.Value(i * 10) for i in items]

    async def main() -> dict[int, int]:
        rounds: Rounds[int, int] = Rounds(run_round)
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
    async def run_round(items: list[int]) -> list[outcome.Outcome[int]]:
        if 99 in items:
            raise RuntimeError("the round broke")
        return [outcome.Error(ValueError(i)) if i % 2 else outcome.Value(i) for i in items]

    async def main() -> None:
        rounds: Rounds[int, int] = Rounds(run_round)
        assert await rounds.submit(2) == 2
        with pytest.raises(ValueError):
            await rounds.submit(3)
        with pytest.raises(RuntimeError):
            await rounds.submit(99)
        assert await rounds.submit(4) == 4  # the rounds go on

    trio.run(main)


def test_more_items_than_a_round_takes_all_get_answered() -> None:
    sizes: list[int] = []

    async def run_round(items: list[int]) -> list[outcome.Outcome[int]]:
        sizes.append(len(items))
        await trio.sleep(0.01)
        return [outcome.Value(i) for i in items]

    async def main() -> list[int]:
        rounds: Rounds[int, int] = Rounds(run_round)
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
    async def run_round(items: list[int]) -> list[outcome.Outcome[int]]:
        await trio.sleep(0.05)
        return [outcome.Value(i) for i in items]

    async def main() -> list[int]:
        rounds: Rounds[int, int] = Rounds(run_round)
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
