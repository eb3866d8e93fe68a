"""The core's view of the replicated log: entries after a snapshot point, and which of them are not yet persisted.

The core keeps every entry after its last snapshot in memory; the runtime keeps the same entries on disk and
drops the prefix with ``compact`` once the state machine has snapshotted past it.
"""

from __future__ import annotations

import itertools

from .types import Entry

RELEASE_AT_ONCE = 1_000
"""Dropping more entries than this (a compaction, a snapshot installed over a long log) leaves them in
``RaftLog.garbage`` for the runtime to free a slice at a time; fewer are freed at once (a fraction of a ms).
In a running node freeing an entry costs 110-220 ns (its memory is no longer in the cache): dropping the 100,000
entries of one snapshot at once held every node's loop for 11-22 ms, all three nodes at the same moment since
they snapshot at the same index, which alone put about 1% of the writes of a paced run above 10 ms."""


class CompactedError(Exception):
    """The entry asked for is covered by the snapshot and no longer in the log."""


class RaftLog:
    __slots__ = ("applied", "commit", "entries", "garbage", "snap_index", "snap_term", "unstable_from")

    def __init__(self, snap_index: int, snap_term: int, entries: list[Entry], commit: int, applied: int) -> None:
        if entries and entries[0].index != snap_index + 1:
            raise ValueError(f"log starts at {entries[0].index}, expected {snap_index + 1} after the snapshot")
        for prev, cur in itertools.pairwise(entries):
            if cur.index != prev.index + 1 or cur.term < prev.term:
                raise ValueError(f"log entries out of order at index {cur.index}")
        last = entries[-1].index if entries else snap_index
        if not snap_index <= applied <= commit <= last:
            raise ValueError(
                f"inconsistent log state: snapshot {snap_index} <= applied {applied} <= commit {commit} "
                f"<= last {last} does not hold"
            )
        self.snap_index = snap_index
        self.snap_term = snap_term
        self.garbage: list[Entry] = []
        """Entries dropped by a large compaction or snapshot install, not yet freed (``release``)."""
        self.entries = entries
        self.unstable_from = last + 1
        """The first index the runtime has not been handed to persist yet."""
        self.commit = commit
        self.applied = applied
        """The last index handed to the runtime to apply (the runtime applies it before serving reads)."""

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int:
        """The term of the entry at ``index``; 0 past the end; ``CompactedError`` below the snapshot."""
        offset = index - self.snap_index
        if offset == 0:
            return self.snap_term
        if offset < 0:
            raise CompactedError(index)
        if offset > len(self.entries):
            return 0
        return self.entries[offset - 1].term

    def matches(self, index: int, term: int) -> bool:
        """Our log holds an entry at ``index`` with ``term`` (never true past the end, whatever ``term`` is)."""
        if index > self.last_index:
            return False
        try:
            return self.term(index) == term
        except CompactedError:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        lt = self.last_term
        return last_term > lt or (last_term == lt and last_index >= self.last_index)

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi) (hi clipped to the end), at least one, stopping once ``max_bytes`` of data is reached."""
        if lo <= self.snap_index:
            raise CompactedError(lo)
        start = lo - self.snap_index - 1
        stop = min(hi, self.last_index + 1) - self.snap_index - 1
        if start >= stop:
            return []
        out = self.entries[start:stop]
        size = 0
        for i, e in enumerate(out):
            size += len(e.data)
            if size > max_bytes and i > 0:
                return out[:i]
        return out

    def append(self, entries: list[Entry]) -> None:
        """Leader path: entries follow the last one directly."""
        self.entries.extend(entries)

    def find_conflict(self, entries: tuple[Entry, ...] | list[Entry]) -> int:
        """The index of the first entry that is not already in our log with the same term (0: none)."""
        for e in entries:
            if not self.matches(e.index, e.term):
                return e.index
        return 0

    def truncate_and_append(self, entries: list[Entry]) -> None:
        """Follower path: ``entries[0]`` replaces our entry at that index and everything after it."""
        first = entries[0].index
        assert first > self.commit, f"Raft §5.3: truncating committed entry {first} (commit {self.commit})"
        del self.entries[first - self.snap_index - 1 :]
        self.entries.extend(entries)
        if first < self.unstable_from:
            self.unstable_from = first

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term (etcd's fast backtracking).

        Every entry after the returned index has a term greater than ``term``, so it cannot match a log whose
        entry at ``index`` has ``term``: the leader may skip all of them in one round trip.
        """
        index = min(index, self.last_index)
        while index > self.snap_index:
            t = self.entries[index - self.snap_index - 1].term
            if t <= term:
                return index, t
            index -= 1
        return index, self.snap_term if index == self.snap_index else 0

    def unstable(self) -> list[Entry]:
        if self.unstable_from > self.last_index:
            return []
        out = self.entries[self.unstable_from - self.snap_index - 1 :]
        self.unstable_from = self.last_index + 1
        return out

    def next_committed(self) -> list[Entry]:
        if self.applied >= self.commit:
            return []
        out = self.entries[self.applied - self.snap_index : self.commit - self.snap_index]
        self.applied = self.commit
        return out

    def restore(self, snap_index: int, snap_term: int) -> None:
        """Replace the whole log with a snapshot point (InstallSnapshot)."""
        self.snap_index = snap_index
        self.snap_term = snap_term
        if len(self.entries) > RELEASE_AT_ONCE:
            self._discard(self.entries)
        self.entries = []
        self.unstable_from = snap_index + 1
        self.commit = snap_index
        self.applied = snap_index

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to ``index``, which the state machine's snapshot now covers."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise ValueError(f"cannot compact to {index}: only {self.applied} has been applied")
        k = index - self.snap_index
        if k <= RELEASE_AT_ONCE:
            del self.entries[:k]
        else:  # keep the tail; the dropped entries are freed a slice at a time (``release``)
            self._discard(self.entries)
            self.entries = self.entries[k:]
        self.snap_index = index
        self.snap_term = term

    def _discard(self, old: list[Entry]) -> None:
        self.release()  # at most one compaction's worth waits: a runtime that never calls release leaks nothing
        self.garbage = old

    def release(self, most: int | None = None) -> bool:
        """Free up to ``most`` dropped entries (all if None); True while some remain. Freeing ten million entries
        at once takes about 300 ms, so a runtime frees them a slice per loop pass instead."""
        g = self.garbage
        if most is None or len(g) <= most:
            g.clear()
        else:
            del g[-most:]  # from the end: no memmove
        return bool(g)
