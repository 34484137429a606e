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
from itertools import repeat


class PartitionOffsets:
    """Offsets fetched from one assigned partition that are not finished yet."""

    __slots__ = ("_done", "_pending", "active", "closed", "committable", "held")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
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
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} added after {self._pending[-1]}")
        self._pending.append(offset)

    def add_run(self, offsets: list[int]) -> None:
        """``add`` for several fetched offsets at once (a run of one ``consume`` call)."""
        if not offsets:
            return
        first, last = offsets[0], offsets[-1]
        pending = self._pending
        if pending and first <= pending[-1]:
            raise ValueError(f"offset {first} added after {pending[-1]}")
        # Strictly increasing: sorted (a near-free check on sorted input) and, unless the
        # run is gap-free, without repeats.
        if offsets != sorted(offsets) or (
            last - first != len(offsets) - 1 and len(set(offsets)) != len(offsets)
        ):
            raise ValueError(f"offsets {first}..{last} are not strictly increasing")
        pending.extend(offsets)

    def done(self, offset: int) -> bool:
        """Mark ``offset`` finished; True when ``committable`` moved forward."""
        pending = self._pending
        if not pending or pending[0] != offset:
            self._done.add(offset)
            return False
        pending.popleft()
        last = offset
        finished = self._done
        while pending and pending[0] in finished:
            last = pending.popleft()
            finished.discard(last)
        self.committable = last + 1
        return True

    def done_many(self, offsets: list[int]) -> bool:
        """``done`` for each of ``offsets`` (in the order they were added); True when
        ``committable`` moved forward. A batch's run usually is the oldest pending offsets
        themselves: each pops straight off the front."""
        pending = self._pending
        finished = self._done
        count = len(offsets)
        if (
            not finished and count and len(pending) >= count
            and pending[0] == offsets[0] and pending[count - 1] == offsets[-1]
        ):
            # The usual batch: the oldest pending offsets themselves, nothing finished out of
            # order. ``offsets`` are distinct pending offsets, so the ends matching the first
            # ``count`` pending ones means they are exactly those.
            for _ in repeat(None, count):
                pending.popleft()
            self.committable = offsets[-1] + 1
            return True
        last = -1
        for offset in offsets:
            if pending and pending[0] == offset:
                last = pending.popleft()
                while finished and pending and pending[0] in finished:
                    last = pending.popleft()
                    finished.discard(last)
            else:
                finished.add(offset)
        if last < 0:
            return False
        self.committable = last + 1
        return True

    @property
    def unfinished(self) -> int:
        """Fetched offsets not finished yet (handed out, held or still buffered)."""
        return len(self._pending) - len(self._done)
