"""Per-partition offset tracking: commit only up to the first unfinished message.

Messages of a partition are handed out in offset order but finish in any order (several
keys run at once). ``PartitionOffsets`` remembers what was fetched and what finished and
says how far the partition may be committed: one past the last offset of the longest
finished prefix. An ack that finishes early never moves the commit past an unfinished
message, so a crash redelivers the unfinished one and everything after it, never loses it.
Pure and single-threaded (the event loop's thread owns it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class PartitionOffsets:
    """Offsets fetched from one assigned partition that are not finished yet.

    Pending offsets are kept as gap-free ``range`` runs, not one entry per offset: a fetched
    run is one append and a batch that finishes the oldest offsets is one step, whatever its
    size (compacted topics and transaction markers leave gaps: those split runs).
    """

    __slots__ = ("_done", "_pending", "active", "closed", "committable", "held")

    def __init__(self) -> None:
        self._pending: deque[range] = deque()
        """Fetched offsets not yet committed past, oldest first (each range non-empty)."""
        self._done: set[int] = set()
        """Pending offsets that finished out of order."""
        self.committable: int | None = None
        """Next offset to commit (all earlier fetched offsets finished), or None."""
        self.active = 0
        """Handed out to a handler and not settled yet."""
        self.held = 0
        """Waiting in memory for their not-before time (retry topics)."""
        self.closed = False
        """Revoked, lost or reset by a seek: settlements no longer count."""

    def add(self, offset: int) -> None:
        """A fetched offset; offsets are added in increasing order."""
        self.add_run(range(offset, offset + 1))

    def add_run(self, offsets: Sequence[int]) -> None:
        """Several fetched offsets at once (a run of one ``consume`` call), in increasing
        order: a ``range`` (gap-free, as the subscriber passes most runs) or a list."""
        if not offsets:
            return
        first = offsets[0]
        pending = self._pending
        if pending and first < pending[-1].stop:
            raise ValueError(f"offset {first} added after {pending[-1].stop - 1}")
        if isinstance(offsets, range):
            if offsets.step != 1:
                raise ValueError(f"offsets {offsets} are not consecutive")
            self._append(offsets)
        else:
            self._append_list(offsets)

    def _append(self, run: range) -> None:
        pending = self._pending
        if pending and pending[-1].stop == run.start:  # continues the last run: merge
            pending[-1] = range(pending[-1].start, run.stop)
        else:
            pending.append(run)

    def _append_list(self, offsets: Sequence[int]) -> None:
        """Offsets as gap-free runs, checked strictly increasing (one step per offset: the
        subscriber passes lists only for runs with gaps and for retry copies)."""
        runs: list[range] = []
        start = previous = offsets[0]
        for offset in offsets[1:]:
            if offset <= previous:
                raise ValueError(
                    f"offsets {offsets[0]}..{offsets[-1]} are not strictly increasing"
                )
            if offset != previous + 1:
                runs.append(range(start, previous + 1))
                start = offset
            previous = offset
        runs.append(range(start, previous + 1))
        for run in runs:
            self._append(run)

    def _pop_oldest(self) -> int:
        """Remove and return the oldest pending offset."""
        pending = self._pending
        front = pending[0]
        if len(front) == 1:
            pending.popleft()
        else:
            pending[0] = range(front.start + 1, front.stop)
        return front.start

    def done(self, offset: int) -> bool:
        """Mark ``offset`` finished; True when ``committable`` moved forward."""
        pending = self._pending
        if not pending or pending[0].start != offset:
            self._done.add(offset)
            return False
        last = self._pop_oldest()
        finished = self._done
        while finished and pending and pending[0].start in finished:
            last = self._pop_oldest()
            finished.discard(last)
        self.committable = last + 1
        return True

    def done_many(self, offsets: Sequence[int]) -> bool:
        """``done`` for each of ``offsets`` (in the order they were added); True when
        ``committable`` moved forward. A batch's run usually is the oldest pending offsets
        themselves, gap-free: then it is removed in one step."""
        pending = self._pending
        count = len(offsets)
        if not count:
            return False
        first, last = offsets[0], offsets[-1]
        if not self._done and pending and last - first == count - 1:
            front = pending[0]
            # ``offsets`` are distinct pending offsets: starting at the oldest and spanning
            # exactly ``count`` values inside the oldest run, they are its first ``count``.
            if front.start == first and last < front.stop:
                if last + 1 == front.stop:
                    pending.popleft()
                else:
                    pending[0] = range(last + 1, front.stop)
                self.committable = last + 1
                return True
        moved = False
        for offset in offsets:
            moved = self.done(offset) or moved
        return moved

    @property
    def unfinished(self) -> int:
        """Fetched offsets not finished yet (handed out, held or still buffered)."""
        return sum(map(len, self._pending)) - len(self._done)
