"""Watches: a node's recent history of changes, and the clients it streams them to.

Every node serves watches, from what it has applied. Its store appends each change to a key (``KVStore.events``:
the revision, the key, its entry after and before) as it applies the log; ``Watches.applied`` moves them into a
bounded history, and each pass sends every watcher the changes in its range it has not had, in revision order,
the changes of one revision always in one message.

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

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zraft.statemachine.kv import Event, meta_of
from zraft.transport.requests import Watch

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
SEND_PER_PASS = 4_000
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


def event_wire(e: Event, prev_kv: bool) -> list[Any]:
    """An event on the wire: ``[type, key, value, create, mod, version]`` (``put``, or ``delete`` with nil value and
    0s), then the value before when asked (nil if the key was absent)."""
    rev, key, new, old = e
    if new is None:
        out: list[Any] = ["delete", key, None, 0, rev, 0]
    else:
        v, c, m, ver = meta_of(new)
        out = ["put", key, v, c, m, ver]
    if prev_kv:
        out.append(None if old is None else meta_of(old)[0])
    return out


class Watches:
    def __init__(self, clock: Callable[[], float], reply: Callable[[bytes, dict[str, Any]], None]) -> None:
        self.clock = clock
        self.reply = reply
        self.events: list[Event] = []
        self.revs: list[int] = []
        """The revision of each event of ``events`` (for bisect)."""
        self.size = 0
        self.compact = 1
        """The oldest revision whose changes are all kept (a watch from before it is refused)."""
        self.watchers: dict[tuple[bytes, int], Watcher] = {}
        self.revision = 0
        """The store's revision as of the last changes taken."""
        self.cut = 0
        """Watchers cut off (behind, or the history jumped)."""
        self.sent = 0

    def reset(self, revision: int) -> None:
        """The store was replaced (a restart, a snapshot installed) at ``revision``: changes from the next one
        on only; every watcher that had not had them all is cut off."""
        self.events.clear()
        self.revs.clear()
        self.size = 0
        self.compact = revision + 1
        for w in list(self.watchers.values()):
            if w.next_rev <= revision:
                self._cut(w, "compacted", f"this node's history jumped to revision {revision} (a snapshot was "
                          "installed); resume on another node, or read again")
        self.revision = revision

    def applied(self, events: list[Event], revision: int) -> None:
        """The store applied entries: take its new changes (``events`` is emptied)."""
        self.revision = revision
        if not events:
            return
        self.events += events
        self.revs += [e[0] for e in events]
        self.size += sum(len(e[1]) + (0 if e[2] is None else len(meta_of(e[2])[0])) for e in events)
        events.clear()
        if len(self.events) > HISTORY_EVENTS or self.size > HISTORY_BYTES:
            self._trim()

    def _trim(self) -> None:
        drop = max(len(self.events) - HISTORY_EVENTS * 3 // 4, len(self.events) // 4)
        # Whole revisions only: the first one kept has all its events.
        while drop < len(self.revs) and self.revs[drop] == self.revs[drop - 1]:
            drop += 1
        gone = self.events[:drop]
        self.size -= sum(len(e[1]) + (0 if e[2] is None else len(meta_of(e[2])[0])) for e in gone)
        self.compact = self.revs[drop] if drop < len(self.revs) else self.revision + 1
        del self.events[:drop]
        del self.revs[:drop]
        for w in list(self.watchers.values()):
            if w.next_rev < self.compact:
                self._cut(w, "compacted", f"this node dropped the changes from revision {w.next_rev} on, not yet "
                          "sent to the watcher, to bound its history")

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
        revs, events = self.revs, self.events
        for w in list(self.watchers.values()):
            if now - w.renewed > WATCH_EXPIRY_S:
                del self.watchers[(w.identity, w.wid)]
                continue
            if w.next_rev <= last and budget > 0:
                budget -= self._send_to(w, bisect.bisect_left(revs, w.next_rev), events, revs, budget)
            elif now - w.sent_at >= PROGRESS_S:
                w.n += 1
                w.sent_at = now
                self.reply(w.identity, {"id": w.wid, "ok": True, "events": [], "rev": last, "n": w.n})

    def _send_to(self, w: Watcher, pos: int, events: list[Event], revs: list[int], budget: int) -> int:
        """Send ``w`` its events from ``pos``: one message of up to ``BATCH_EVENTS``; how many events were looked
        at."""
        out: list[list[Any]] = []
        size = 0
        looked = 0
        n_events = len(events)
        covers = w.covers
        prev = w.prev_kv
        rev = w.next_rev
        while pos < n_events and looked < budget:
            rev = revs[pos]
            # One revision at a time: all of its events, or none.
            hi = pos
            while hi < n_events and revs[hi] == rev:
                hi += 1
            for e in events[pos:hi]:
                if covers(e[1]):
                    ev = event_wire(e, prev)
                    out.append(ev)
                    size += len(e[1]) + len(ev[2] or b"") + (len(ev[6] or b"") if prev else 0)
            looked += hi - pos
            pos = hi
            w.next_rev = rev + 1
            if len(out) >= BATCH_EVENTS or size >= BATCH_BYTES:
                break
        if pos >= n_events:
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
        return looked
