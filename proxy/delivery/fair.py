"""The waiting messages of one queue, in the order they go: fair turns between keys,
FIFO within a key. Pure: no I/O, time passed in.

Each message is known by its sequence number (the order it was accepted in). Within a
key, the lowest ready number goes first, so a message back from a failed attempt goes
before the ones accepted after it, once it is due again; while it waits, they go.

Between keys, round robin: each key with ready messages holds a place in the turn
order; the key served goes to the back. A key that becomes ready (a new tenant, or one
whose backlog had emptied) is put just before the key served last, not at the back: one
tenant's backlog of a thousand delays another tenant's message by one delivery at most,
and keys that have waited longer still go first.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

WAITING, READY, FLIGHT = 0, 1, 2


@dataclass(slots=True)
class Entry:
    key: str
    due: float
    since: float  # what the age of the oldest message is measured from
    state: int = WAITING


class FairQueue:
    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}
        self._waiting: list[tuple[float, int]] = []  # (due, seq); stale items skipped
        self._ready: dict[str, list[int]] = {}  # key -> heap of seqs
        self._turns: list[tuple[int, int, str]] = []  # (stamp, tie, key) of ready keys
        self._served = 0  # turns given so far
        self._tie = 0
        self._ages: list[tuple[float, int]] = []  # (since, seq); stale items skipped
        self.in_flight = 0

    def __len__(self) -> int:
        """Messages waiting or in flight."""
        return len(self._entries)

    def __contains__(self, seq: int) -> bool:
        return seq in self._entries

    def add(self, seq: int, key: str, due: float, since: float, now: float) -> None:
        """A message that waits (new, or back from a delivery that did not settle it)."""
        entry = self._entries.get(seq)
        if entry is None:
            entry = self._entries[seq] = Entry(key, due, since)
            heapq.heappush(self._ages, (since, seq))
        elif entry.state == FLIGHT:
            self.in_flight -= 1
        elif entry.state == READY:
            return  # already in line
        entry.due, entry.state = due, WAITING
        if due <= now:
            self._make_ready(seq, entry)
        else:
            heapq.heappush(self._waiting, (due, seq))

    def back(self, seq: int, due: float, now: float) -> None:
        """A message taken for delivery waits again, until `due`."""
        entry = self._entries.get(seq)
        if entry is not None:
            self.add(seq, entry.key, due, entry.since, now)

    def take(self, now: float, limit: int) -> list[int]:
        """Up to `limit` messages due now, in turn; they are in flight until `done()` or
        `add()` again."""
        self._promote(now)
        out: list[int] = []
        turns = self._turns
        while len(out) < limit and turns:
            _, tie, key = heapq.heappop(turns)
            line = self._ready[key]
            seq = heapq.heappop(line)
            self._entries[seq].state = FLIGHT
            self.in_flight += 1
            out.append(seq)
            self._served += 1
            if line:
                heapq.heappush(turns, (2 * self._served, tie, key))
            else:
                del self._ready[key]
        return out

    def done(self, seq: int) -> None:
        """Settled for good (delivered, dead letter), or no longer this queue's."""
        entry = self._entries.pop(seq, None)
        if entry is None:
            return
        if entry.state == FLIGHT:
            self.in_flight -= 1
        elif entry.state == READY:
            self._unready(seq, entry.key)

    def next_due(self) -> float | None:
        """When a waiting message falls due; None when none waits for a time."""
        waiting = self._waiting
        while waiting:
            due, seq = waiting[0]
            entry = self._entries.get(seq)
            if entry is not None and entry.state == WAITING and entry.due == due:
                return due
            heapq.heappop(waiting)
        return None

    @property
    def ready(self) -> bool:
        return bool(self._turns)

    def oldest(self) -> float | None:
        """The `since` of the oldest message waiting or in flight."""
        ages = self._ages
        while ages:
            since, seq = ages[0]
            entry = self._entries.get(seq)
            if entry is not None and entry.since == since:
                return since
            heapq.heappop(ages)
        return None

    def _promote(self, now: float) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            due, seq = heapq.heappop(waiting)
            entry = self._entries.get(seq)
            if entry is not None and entry.state == WAITING and entry.due == due:
                self._make_ready(seq, entry)

    def _make_ready(self, seq: int, entry: Entry) -> None:
        entry.state = READY
        line = self._ready.get(entry.key)
        if line is not None:
            heapq.heappush(line, seq)
            return
        self._ready[entry.key] = [seq]
        self._tie += 1
        # Just before the key served last: after every key that has waited longer.
        heapq.heappush(self._turns, (2 * self._served - 1, self._tie, entry.key))

    def _unready(self, seq: int, key: str) -> None:
        line = self._ready[key]
        line.remove(seq)
        heapq.heapify(line)
        if not line:
            del self._ready[key]
            self._turns = [turn for turn in self._turns if turn[2] != key]
            heapq.heapify(self._turns)
