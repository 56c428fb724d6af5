"""Work that arrives while a round of it runs goes, together, in the next round.

Group commit: closes that arrive at once share one catalog transaction (one commit,
one wait for the disk or the server, one announcement) and one trip to a worker
thread, instead of each paying for its own; on a machine with few cores it is the
per-file overhead, more than the disk, that bounds how many small files a mount
takes per second. Nobody waits on a timer: a round starts as soon as the one before
it ends, with everything that arrived meanwhile, so a lone close pays nothing extra
and eight writers at once share a few rounds. Each item gets its own answer: a
round returns one `outcome` per item.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import outcome
import trio

Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_ROUND = 64  # items in one round; more wait for the next


class _Ticket(Generic[Item, Result]):
    def __init__(self, item: Item) -> None:
        self.item = item
        self.answer: outcome.Outcome[Result] | None = None
        self.wake = trio.Event()  # set when answered, or when it may lead the next round


class Rounds(Generic[Item, Result]):
    """`await rounds.submit(item)`: run `item` in the next round of `run_round`.

    `run_round(items)` returns one outcome per item, in order. One round runs at a
    time; the caller whose item is first in line runs the next one (no task of its
    own)."""

    def __init__(self, run_round: Callable[[list[Item]], Awaitable[list[outcome.Outcome[Result]]]]
                 ) -> None:
        self._run_round = run_round
        self._waiting: list[_Ticket[Item, Result]] = []
        self._running = False
        self.rounds = 0  # how many ran, and how many items they took (for tests, metrics)
        self.items = 0

    async def submit(self, item: Item) -> Result:
        ticket: _Ticket[Item, Result] = _Ticket(item)
        self._waiting.append(ticket)
        while ticket.answer is None:
            if not self._running:
                await self._lead()
            else:
                try:
                    await ticket.wake.wait()
                except BaseException:  # cancelled: leave the line, hand on the lead
                    if ticket in self._waiting:
                        self._waiting.remove(ticket)
                    if self._waiting and not self._running:
                        self._waiting[0].wake.set()
                    raise
                ticket.wake = trio.Event()
        return ticket.answer.unwrap()

    async def _lead(self) -> None:
        """Run one round with the items waiting now; then hand the lead on."""
        self._running = True
        batch, self._waiting = self._waiting[:MAX_ROUND], self._waiting[MAX_ROUND:]
        try:
            with trio.CancelScope(shield=True):  # the others' answers depend on it
                try:
                    answers = await self._run_round([t.item for t in batch])
                    if len(answers) != len(batch):
                        raise AssertionError("a round must answer every item")
                except BaseException as e:  # handed to every item
                    answers = [outcome.Error(e)] * len(batch)
            self.rounds += 1
            self.items += len(batch)
            for ticket, answer in zip(batch, answers, strict=True):
                ticket.answer = answer
                ticket.wake.set()
        finally:
            self._running = False
            if self._waiting:
                self._waiting[0].wake.set()  # the first in line leads the next round
