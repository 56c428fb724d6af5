"""Work that arrives while a round of it runs goes, together, in the next round.

Group commit: closes that arrive at once share one catalog transaction (one commit,
one wait for the disk or the server, one announcement) and one trip to a worker
thread, instead of each paying for its own; on a machine with few cores it is the
per-file overhead, more than the disk, that bounds how many small files a mount
takes per second. Nobody waits on a timer: a round starts as soon as the one before
it ends, with everything that arrived meanwhile, so a lone close pays nothing extra
and eight writers at once share a few rounds. Each item gets its own answer: a
round returns one `outcome` per item.

Rounds run back to back in one worker thread: when a round ends and more items
wait, the thread answers the round's items (through the trio token) and goes on
with the next round itself, rather than returning to the event loop and being sent
to a thread again. Timed in the daemon with 8 writers, that return and that new trip
left the rounds idle 1.1-1.2 ms between one round and the next, against 2.6-2.9 ms
for the round itself. A thread keeps the lead for at most `lead_for` seconds, so
that other jobs waiting for the same connection get their turn.

Where nobody waits for the answers (a bulk load's registrations, whose closes have
returned: closes_behind.py), a round may also wait `gather` seconds for more items
before it starts: one writer's closes then share rounds too. A round costs its thread
a transaction, its pages written to SQLite's log and a wake-up of the event loop
whatever its size, and on two cores that competes with the writer's next requests.
Measured (README, "A bulk load's rounds gather"): one `cp` of 5,000 small files in a
bulk load went from a median of 1,202 to 1,656 files/s with 5 ms, in 270-311 rounds
instead of 2,479-3,252.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import outcome
import trio

Context = TypeVar("Context")
Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_ROUND = 64  # items in one round; more wait for the next
LEAD_FOR = 0.05  # seconds a worker thread runs rounds back to back before it hands on


class _Ticket(Generic[Item, Result]):
    def __init__(self, item: Item) -> None:
        self.item = item
        self.answer: outcome.Outcome[Result] | None = None
        self.wake = trio.Event()  # set when answered, or when it may lead the next round


class Rounds(Generic[Context, Item, Result]):
    """`await rounds.submit(item)`: run `item` in the next round of `run_round`.

    `run_round(context, items)` runs in a worker thread and returns one outcome per
    item, in order. `in_thread(loop)` must call `loop(context)` in a worker thread
    (with the context rounds need there, such as a catalog connection) and return
    when it has. One thread runs rounds at a time; the caller whose item is first in
    line sends the next one (no task of its own)."""

    def __init__(self, run_round: Callable[[Context, list[Item]], list[outcome.Outcome[Result]]],
                 in_thread: Callable[[Callable[[Context], None]], Awaitable[None]],
                 lead_for: float = LEAD_FOR, gather: float = 0.0) -> None:
        self._run_round = run_round
        self._in_thread = in_thread
        self._lead_for = lead_for
        self.gather = gather  # seconds a round waits for more items (see above)
        self._lock = threading.Lock()  # _waiting and _running, shared with the thread
        self._waiting: list[_Ticket[Item, Result]] = []
        self._running = False
        self.rounds = 0  # how many ran, and how many items they took (for tests, metrics)
        self.items = 0
        self.seconds = 0.0  # and how long they took, in their thread
        self.trips = 0  # how many times a thread was sent to run rounds

    async def submit(self, item: Item) -> Result:
        ticket: _Ticket[Item, Result] = _Ticket(item)
        with self._lock:
            self._waiting.append(ticket)
        while ticket.answer is None:
            with self._lock:
                lead = not self._running and ticket in self._waiting
                if lead:
                    self._running = True
            if lead:
                if self._gathering():
                    with trio.CancelScope(shield=True):  # it holds the lead meanwhile
                        await trio.sleep(self.gather)
                await self._lead()
                continue
            try:
                await ticket.wake.wait()
            except BaseException:  # cancelled: leave the line, hand on the lead
                with self._lock:
                    if ticket in self._waiting:
                        self._waiting.remove(ticket)
                self._wake_next()
                raise
            ticket.wake = trio.Event()
        return ticket.answer.unwrap()

    def _gathering(self) -> bool:
        """Whether the next round should wait `gather` for more items first."""
        with self._lock:
            return self.gather > 0 and len(self._waiting) < MAX_ROUND

    def _take(self, deadline: float | None = None) -> list[_Ticket[Item, Result]]:
        """The next round's tickets; none, and the lead given up, when nothing waits
        or the thread has led past `deadline`."""
        with self._lock:
            if not self._waiting or (deadline is not None and time.monotonic() > deadline):
                self._running = False
                return []
            batch, self._waiting = self._waiting[:MAX_ROUND], self._waiting[MAX_ROUND:]
            return batch

    async def _lead(self) -> None:
        """Send a thread to run rounds while items wait; then hand the lead on. The
        first round is what waits now; the thread takes each next one itself."""
        token = trio.lowlevel.current_trio_token()
        deadline = time.monotonic() + self._lead_for
        taken = self._take()

        def loop(context: Context) -> None:
            nonlocal taken
            while taken:
                began = time.perf_counter()
                try:
                    answers = self._run_round(context, [t.item for t in taken])
                    if len(answers) != len(taken):
                        raise AssertionError("a round must answer every item")
                except BaseException as e:  # handed to every item
                    answers = [outcome.Error(e) for _ in taken]  # one each: read once
                token.run_sync_soon(self._answer, taken, answers,
                                    time.perf_counter() - began)
                # Past the deadline the lead is handed on, and the next leader gathers.
                if time.monotonic() < deadline and self._gathering():
                    time.sleep(self.gather)  # this thread only: the loop goes on
                taken = self._take(deadline)

        self.trips += 1
        try:
            with trio.CancelScope(shield=True):  # the others' answers depend on it
                await self._in_thread(loop)
        except BaseException as e:  # the thread did not run them: fail what it held
            with self._lock:
                self._running = False
            if taken:  # (an empty round is no round: the metrics count rounds)
                self._answer(taken, [outcome.Error(e) for _ in taken])
        self._wake_next()

    def _answer(self, batch: list[_Ticket[Item, Result]],
                answers: list[outcome.Outcome[Result]], seconds: float = 0.0) -> None:
        """On the trio thread: give a round's items their answers."""
        self.rounds += 1
        self.items += len(batch)
        self.seconds += seconds
        for ticket, answer in zip(batch, answers, strict=True):
            ticket.answer = answer
            ticket.wake.set()

    def _wake_next(self) -> None:
        with self._lock:
            first = self._waiting[0] if self._waiting and not self._running else None
        if first is not None:
            first.wake.set()  # the first in line leads the next round
