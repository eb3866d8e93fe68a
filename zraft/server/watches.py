"""Watches: a node's recent history of changes, and the clients it streams them to.

Every node serves watches, from what it has applied. Its store appends each change to a key to the history here
(``KVStore.events`` is ``Watches.events``, the same list: the revision, the key, its entry after and before) as it
applies the log, and counts what they hold (``KVStore.event_bytes``); ``Watches.applied`` keeps the history bounded,
and each pass sends every watcher the changes in its range it has not had, in revision order, the changes of one
revision always in one message.

A watch starts at a revision. Every change from there is in the history unless it was dropped to bound it, or
happened before this node's store began (a restart, a snapshot installed): then the watch is refused with
``compacted`` and the oldest revision still kept. A client resumes a watch -- after a disconnect, a node's death,
a leader change -- by watching again, on any node, from the revision after the last one it saw: no gap, no
duplicate.

The stream is acknowledged: the client acks the revision it has every second or so (``WatchAck``), which also
keeps the watch (one not acked for ``WATCH_EXPIRY_S`` is dropped: a client that went away costs nothing after
that). A watcher more than ``MAX_UNACKED_EVENTS`` events or ``MAX_UNACKED_BYTES`` behind is cut off with a reason
(``watch_cut``), never buffered without bound; so is every watcher when the history jumps (a snapshot installed).
Each message carries its number in the stream (``n``): a client that sees one missing resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msgpack import unpackb

from zraft.statemachine.kv import EVENT_FIELDS, _pack
from zraft.transport.requests import Watch

F = EVENT_FIELDS
"""Items per change in the flat history."""

HISTORY_EVENTS = 100_000
"""Most changes a node keeps for watches to start (or resume) from."""
HISTORY_BYTES = 64 << 20
"""About the most bytes of keys and values those changes hold."""
MAX_WATCHERS = 10_000
"""Most watches one node serves at once: past it, a new one is refused (``busy``)."""
WATCH_EXPIRY_S = 10.0
"""A watch not acked for this long is dropped (its client went away)."""
PROGRESS_S = 1.0
"""A watcher sent nothing for this long is sent an empty batch with the node's revision (it knows the watch lives)."""
MAX_UNACKED_EVENTS = 10_000
MAX_UNACKED_BYTES = 16 << 20
"""A watcher this far behind what it acked is cut off."""
BATCH_EVENTS = 1_000
BATCH_BYTES = 1 << 20
"""About the most events and bytes of one message (the events of one revision always go together)."""
SEND_PER_PASS = 20_000
"""Events sent to all watchers in one loop pass at most: a watcher catching up from far back does not stall the loop
(the rest go in the next passes)."""


@dataclass(slots=True)
class Watcher:
    identity: bytes
    wid: int
    start: bytes
    end: bytes | None
    whole: bool
    prev_kv: bool
    next_rev: int
    """The revision it has not been sent yet (every earlier one in its range was)."""
    acked: int
    renewed: float
    sent_at: float
    n: int = 0
    """Messages sent."""
    unacked_events: int = 0
    unacked_bytes: int = 0

    def covers(self, key: bytes) -> bool:
        if self.end is None:
            return key >= self.start if self.whole else key == self.start
        return self.start <= key < self.end


def find(events: list[Any], rev: int) -> int:
    """The offset in a flat list of events of the first event of revision ``rev`` or later."""
    lo, hi = 0, len(events) // F
    while lo < hi:
        mid = (lo + hi) // 2
        if events[mid * F] < rev:
            lo = mid + 1
        else:
            hi = mid
    return lo * F


def event_wire(events: list[Any], at: int, prev_kv: bool) -> list[Any]:
    """The event at offset ``at`` on the wire: ``[type, key, value, create, mod, version]`` (``put``, or ``delete``
    with nil value and 0s), then the value before when asked (nil if the key was absent)."""
    rev, key, new, old = events[at : at + 4]  # (entries: tuples, or lists once unpacked; an old one may be bytes)
    out: list[Any] = ["delete", key, None, 0, rev, 0] if new is None else ["put", key, new[0], new[1], rev, new[3]]
    if prev_kv:
        out.append(old if old is None or type(old) is bytes else old[0])
    return out


@dataclass(slots=True)
class Chunk:
    """One loop pass's changes, packed: whole revisions, from ``first`` to ``last``."""

    first: int
    last: int
    data: bytes
    count: int


class Watches:
    def __init__(self, clock: Callable[[], float], reply: Callable[[bytes, dict[str, Any]], None]) -> None:
        self.clock = clock
        self.reply = reply
        self.events: list[Any] = []
        """This loop pass's changes, flat (``kv.EVENT_FIELDS`` items a change): the store appends to it (the replica
        gives the store this list), and ``seal`` packs them into ``chunks`` at the end of the pass."""
        self.chunks: list[Chunk] = []
        """The history before, oldest first. Packed: kept as Python objects, a hundred thousand changes made every
        write of a 3-node cluster about 10% slower (a queue of objects that outlive everything allocated after them:
        bench/compare.py); packed, a pass's changes are one bytes object, and its own objects go as it ends."""
        self.count = 0
        """Changes in ``chunks``."""
        self.size = 0
        """Bytes of ``chunks``."""
        self.compact = 1
        """The oldest revision whose changes are all kept (a watch from before it is refused)."""
        self.watchers: dict[tuple[bytes, int], Watcher] = {}
        self.revision = 0
        """The store's revision as of the last changes taken."""
        self.cut = 0
        """Watchers cut off (behind, or the history jumped)."""
        self.sent = 0
        self.on = True
        """Whether the store records its changes (``KVStore.watching``; the replica sets it): until then a watch is
        answered ``busy``."""
        self._unpacked: dict[int, list[Any]] = {}
        """Chunks unpacked during one ``send`` (by first revision)."""

    def reset(self, revision: int) -> None:
        """The store was replaced (a restart, a snapshot installed) at ``revision``: changes from the next one
        on only; every watcher that had not had them all is cut off."""
        self.events.clear()
        self.chunks.clear()
        self.count = self.size = 0
        self.compact = revision + 1
        for w in list(self.watchers.values()):
            if w.next_rev <= revision:
                self._cut(w, "compacted", f"this node's history jumped to revision {revision} (a snapshot was "
                          "installed); resume on another node, or read again")
        self.revision = revision

    def applied(self, revision: int) -> None:
        """The store applied entries, up to ``revision`` (their changes are in ``events``)."""
        self.revision = revision

    def seal(self) -> None:
        """End of a loop pass: pack its changes into the history, and keep the history within its bounds."""
        events = self.events
        if not events:
            return
        data = _pack(events)
        self.chunks.append(Chunk(events[0], events[-F], data, len(events) // F))
        self.count += len(events) // F
        self.size += len(data)
        events.clear()
        chunks = self.chunks
        if self.count > HISTORY_EVENTS or self.size > HISTORY_BYTES:
            drop = 0
            keep_events, keep_bytes = HISTORY_EVENTS * 7 // 8, HISTORY_BYTES * 7 // 8
            while drop < len(chunks) - 1 and (self.count > keep_events or self.size > keep_bytes):
                self.count -= chunks[drop].count
                self.size -= len(chunks[drop].data)
                drop += 1
            if drop:
                self.compact = chunks[drop].first
                del chunks[:drop]
                for w in list(self.watchers.values()):
                    if w.next_rev < self.compact:
                        self._cut(w, "compacted", f"this node dropped the changes from revision {w.next_rev} on, not "
                                  "yet sent to the watcher, to bound its history")

    def since(self, rev: int, cache: bool = True) -> list[tuple[list[Any], int]]:
        """The flat lists of changes (and the offset to start at in the first) that hold every change from
        revision ``rev`` on: chunks unpacked (``cache``: once per ``send``), then this pass's."""
        out: list[tuple[list[Any], int]] = []
        chunks = self.chunks
        lo, hi = 0, len(chunks)
        while lo < hi:  # the first chunk that ends at or after rev
            mid = (lo + hi) // 2
            if chunks[mid].last < rev:
                lo = mid + 1
            else:
                hi = mid
        for c in chunks[lo:]:
            flat = self._unpacked.get(c.first)
            if flat is None:
                flat = unpackb(c.data, use_list=True)
                if cache:
                    self._unpacked[c.first] = flat
            out.append((flat, find(flat, rev) if not out else 0))
        if self.events:
            out.append((self.events, find(self.events, rev) if not out else 0))
        return out

    def watch(self, identity: bytes, req: Watch) -> None:
        key = (identity, req.id)
        start = req.start_revision or self.revision + 1
        if start < self.compact:
            self.reply(identity, {"id": req.id, "ok": False, "error": "compacted", "compact_revision": self.compact,
                                  "message": f"revision {start} is older than this node's history: the oldest kept "
                                             f"is {self.compact}"})
            return
        if key not in self.watchers and len(self.watchers) >= MAX_WATCHERS:
            self.reply(identity, {"id": req.id, "ok": False, "error": "busy",
                                  "message": f"this node serves {MAX_WATCHERS} watches already; try another"})
            return
        now = self.clock()
        self.watchers[key] = Watcher(identity, req.id, req.start, req.end, req.whole, req.prev_kv, start, start - 1,
                                     now, now)
        self.reply(identity, {"id": req.id, "ok": True, "watching": True, "rev": self.revision, "n": 0})

    def ack(self, identity: bytes, wid: int, revision: int) -> bool:
        w = self.watchers.get((identity, wid))
        if w is None:
            return False
        w.renewed = self.clock()
        if revision > w.acked:
            w.acked = min(revision, w.next_rev - 1)
            w.unacked_events = w.unacked_bytes = 0  # (counted again from here: what is sent after the ack)
        return True

    def cancel(self, identity: bytes, wid: int) -> bool:
        return self.watchers.pop((identity, wid), None) is not None

    def _cut(self, w: Watcher, error: str, why: str) -> None:
        self.watchers.pop((w.identity, w.wid), None)
        self.cut += 1
        msg: dict[str, Any] = {"id": w.wid, "ok": False, "error": error, "message": why, "compact_revision":
                               self.compact, "n": w.n + 1}
        self.reply(w.identity, msg)

    def send(self) -> None:
        """Send each watcher what it has not had (bounded per pass), and progress to the idle ones; drop the
        expired ones."""
        if not self.watchers:
            return
        now = self.clock()
        budget = SEND_PER_PASS
        last = self.revision
        try:
            for w in list(self.watchers.values()):
                if now - w.renewed > WATCH_EXPIRY_S:
                    del self.watchers[(w.identity, w.wid)]
                    continue
                if w.next_rev <= last and budget > 0:
                    budget -= self._send_to(w, budget)
                elif now - w.sent_at >= PROGRESS_S:
                    w.n += 1
                    w.sent_at = now
                    self.reply(w.identity, {"id": w.wid, "ok": True, "events": [], "rev": last, "n": w.n})
        finally:
            self._unpacked.clear()

    def _send_to(self, w: Watcher, budget: int) -> int:
        """Send ``w`` its events from its next revision: one message of up to ``BATCH_EVENTS``; how many events were
        looked at."""
        out: list[list[Any]] = []
        size = 0
        looked = 0
        covers = w.covers
        prev = w.prev_kv
        done = True
        for events, pos in self.since(w.next_rev):
            n_events = len(events)
            while pos < n_events:
                if looked >= budget or len(out) >= BATCH_EVENTS or size >= BATCH_BYTES:
                    done = False
                    break
                rev = events[pos]
                # One revision at a time: all of its events, or none (a revision is never split between lists).
                hi = pos
                while hi < n_events and events[hi] == rev:
                    hi += F
                for at in range(pos, hi, F):
                    if covers(events[at + 1]):
                        ev = event_wire(events, at, prev)
                        out.append(ev)
                        size += len(ev[1]) + len(ev[2] or b"") + (len(ev[6] or b"") if prev else 0)
                looked += (hi - pos) // F
                pos = hi
                w.next_rev = rev + 1
            if not done:
                break
        if done:
            w.next_rev = self.revision + 1
        if out or w.sent_at + PROGRESS_S <= self.clock():
            w.n += 1
            w.sent_at = self.clock()
            w.unacked_events += len(out)
            w.unacked_bytes += size
            self.sent += len(out)
            self.reply(w.identity, {"id": w.wid, "ok": True, "events": out, "rev": w.next_rev - 1, "n": w.n})
            if w.unacked_events > MAX_UNACKED_EVENTS or w.unacked_bytes > MAX_UNACKED_BYTES:
                self._cut(w, "watch_cut", f"the watcher fell {w.unacked_events} events ({w.unacked_bytes} bytes) "
                          "behind its acks; resume from the last revision it has")
        return max(looked, 1)
