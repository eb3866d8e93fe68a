"""A simulated watcher, as ``zraft.client.Client.watch`` behaves: it asks the leader to keep the history of changes
(``watch_start``), watches one of the appended keys on a node, acks what it got every second, and resumes on another
node from the revision after the last one it had -- when a batch is missing from the numbered stream, on an error,
or after three seconds without a word (a node crashed or cut off).

What it checks, as the events come: the appended keys only grow by appends of one element (``SimClient``'s
``<client>-<n>;``), so each event's value must be the value of the event before plus exactly one element -- a change
skipped, repeated or out of order breaks that -- and revisions only grow. At the end (``check_watches``): a watcher
that caught up holds the key's final value. A ``compacted`` answer from every node (their history was cut by a
snapshot install or a restart) makes it start again from now, with no value to extend (counted).
"""

from __future__ import annotations

import random
from typing import Any

from zraft.transport.codec import Err

from .cluster import SimCluster, Violation

ACK_MS = 1000.0
SILENCE_MS = 3000.0


class SimWatchClient:
    def __init__(self, cluster: SimCluster, number: int, rng: random.Random, keys: tuple[str, ...]) -> None:
        self.c = cluster
        self.number = number
        self.rng = rng
        self.key = rng.choice(keys).encode()
        self.identity = f"watcher-{number}".encode()
        cluster.clients[self.identity] = self.on_reply
        self.nodes = sorted(cluster.nodes)
        self.stopped = False
        self.busy = False
        self.sessions = 0
        self.node = rng.choice(self.nodes)
        self._rid = 0
        self.wid = 0
        self.n = -1
        self.next_rev = 0
        self.revision = 0
        """Every change up to it was delivered."""
        self.value: bytes | None = None
        """The key's value as the last event left it (None: not known since the watch (re)started)."""
        self.events = 0
        self.resumes = 0
        self.restarts = 0
        self.compacted: set[int] = set()
        self.started = False
        self._heard = 0.0

    def start(self, delay: float) -> None:
        self.c.at(delay, self._ask_start)

    def _ask_start(self) -> None:
        """``watch_start`` until a leader says the history is kept."""
        if self.stopped or self.started:
            return
        self._rid += 1
        self.c.send_to_node(self.identity, self.node, {"op": "watch_start", "id": self._rid})
        self.c.at(self.rng.uniform(200, 500), self._ask_start)

    def _watch(self) -> None:
        if self.stopped:
            return
        self._rid += 1
        self.wid = self._rid
        self.n = -1
        self._heard = self.c.now
        req: dict[str, Any] = {"op": "watch", "id": self.wid, "key": self.key}
        if self.next_rev:
            req["start_revision"] = self.next_rev
        self.c.send_to_node(self.identity, self.node, req)
        wid = self.wid
        self.c.at(ACK_MS, lambda: self._tick(wid))

    def _tick(self, wid: int) -> None:
        if self.stopped or wid != self.wid:
            return
        if self.c.now - self._heard > SILENCE_MS:
            self._resume()
            return
        if self.n >= 0:
            self._rid += 1
            self.c.send_to_node(self.identity, self.node, {"op": "watch_ack", "id": self._rid, "watch": self.wid,
                                                           "revision": self.revision})
        self.c.at(ACK_MS, lambda: self._tick(wid))

    def _resume(self) -> None:
        self.resumes += 1
        self.node = self.nodes[(self.nodes.index(self.node) + 1) % len(self.nodes)]
        self.c.at(self.rng.uniform(5, 50), self._watch)

    def on_reply(self, node: int, r: dict[str, Any]) -> None:
        if self.stopped:
            return
        rid = r.get("id")
        if not self.started:
            if r.get("ok") and r.get("watching") is True:
                self.started = True
                self._watch()
            elif r.get("error") == Err.NOT_LEADER and r.get("leader") in self.c.nodes:
                self.node = r["leader"]
            return
        if rid != self.wid or node != self.node:
            return  # an ack's answer, or a stream given up on
        self._heard = self.c.now
        if not r.get("ok"):
            if r.get("error") == "compacted":
                self.compacted.add(node)
                if len(self.compacted) >= len(self.nodes):  # no node has the changes: start again from now
                    self.compacted.clear()
                    self.restarts += 1
                    self.next_rev = 0
                    self.value = None
            self.wid = -1
            self._resume()
            return
        if r.get("n") != self.n + 1:
            self.wid = -1
            self._resume()  # a batch was lost
            return
        self.n = r["n"]
        rev = r.get("rev")
        if type(rev) is not int:
            raise Violation(f"watcher {self.number}: a malformed answer {r!r:.200}")
        if r.get("watching"):
            if not self.next_rev:
                self.next_rev, self.revision = rev + 1, rev
            return
        for e in r.get("events", []):
            self._event(e, rev)
        if rev >= self.next_rev:
            self.revision = rev
            self.next_rev = rev + 1
        self.compacted.clear()

    def _event(self, e: list[Any], batch_rev: int) -> None:
        kind, key, value, _, mod, _ = e
        if key != self.key or kind != "put" or type(value) is not bytes:
            raise Violation(f"watcher {self.number} of {self.key!r} got {e!r:.200}")
        if mod < self.next_rev or mod > batch_rev:
            raise Violation(f"watcher {self.number}: an event of revision {mod} after {self.revision} (or past its "
                            f"batch's {batch_rev}): repeated or out of order")
        old = self.value
        if old is not None and not (value.startswith(old) and value[len(old):].count(b";") == 1):
            raise Violation(f"watcher {self.number} of {self.key!r}: at revision {mod} the value went from "
                            f"{old[-40:]!r} to {value[-60:]!r}, not by one append: a change was skipped or repeated")
        self.value = value
        self.events += 1
        self.next_rev = mod + 1
        self.revision = mod


def check_watches(c: SimCluster, watchers: list[SimWatchClient]) -> None:
    """After the heal: each watcher, once caught up with the store, holds its key's final value."""
    ld = c.stable_leader()
    store = c.nodes[ld].kv if ld is not None else None
    if store is None:
        return
    final = store.revision
    c.run_until(lambda: all(w.revision >= final or not w.started for w in watchers), 8000.0)
    for w in watchers:
        w.stopped = True
        if w.started and w.revision >= final and w.value is not None and w.value != (store.get(w.key) or b""):
            raise Violation(f"watcher {w.number} of {w.key!r} caught up to revision {w.revision} holding "
                            f"{w.value[-60:]!r}; the key is {(store.get(w.key) or b'')[-60:]!r}")
