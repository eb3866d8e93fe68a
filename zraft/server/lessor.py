"""The leader's side of leases: when each one expires, by the leader's own clock.

The store holds the leases and their keys (``zraft.statemachine.leases``), the same on every node, and no time.
Only the leader keeps deadlines, here. When one passes it proposes a ``LEASE_EXPIRE`` command, and every node
deletes the lease's keys when it applies that entry -- never on its own clock.

The rules that keep a lease from expiring early (etcd's lessor, with one more gate):

- A keepalive is answered only once the leader has confirmed it still leads (a read index, as a linearizable read
  is): a deposed leader that has not heard of its successor never promises a lease more time.
- A new leader keeps no deadlines until it has applied every entry of the terms before its own (``ready``): by
  then each expiry an earlier leader proposed is either applied or gone for good. It then gives every lease its
  whole TTL again, plus ``extension`` (the longest election timeout), before it expires anything.
- A lease whose expiry the leader proposed takes no more keepalives (they are told it is gone).

So a lease the holder renewed at time t (as the holder's clock saw it sent) is deleted no sooner than t + TTL by
the leader's clock, give or take the drift between the two clocks over one TTL.
"""

from __future__ import annotations

import heapq
from typing import Any

from zraft.server.seams import Clock
from zraft.statemachine.leases import Leases

CLOCK_DRIFT = 0.01
"""How far apart the rates of two nodes' clocks (and a client's) may run, as a fraction (1%: 36 s an hour; a
quartz clock is off by well under 0.01%). What a holder may count on is ``safe_for``."""
EXPIRE_KEYS = 1_000
"""About the most keys one expiry entry deletes (a lease with more goes alone in its entry)."""
EXPIRE_LEASES = 1_000
"""Most leases one expiry entry names."""
EXPIRE_ENTRIES = 2
"""Most expiry entries the leader proposes per tick (50 ms): 40,000 keys a second at most. Deleting a key costs
about 5 us, so that a tick's expiries are about 10 ms of work on every node, and a million keys that expire at once
go over 25 s of short loop passes instead of stalling one (``bench/lease_bench.py``: 8 entries a tick made the
longest 70 ms)."""


def safe_for(ttl_s: float) -> float:
    """How long after sending a keepalive (or grant) that was acknowledged a holder may count on its lease: the TTL
    less twice ``CLOCK_DRIFT`` of it (the leader's clock may run fast, and the holder's slow)."""
    return ttl_s * (1 - 2 * CLOCK_DRIFT)


class Lessor:
    def __init__(self, clock: Clock, extension_s: float) -> None:
        self.clock = clock
        self.extension_s = extension_s
        self.deadlines: dict[int, float] = {}
        self.heap: list[tuple[float, int]] = []
        """(deadline, lease id), earliest first; an entry whose deadline is no longer the lease's is skipped."""
        self.expiring: set[int] = set()
        """Leases whose expiry is proposed and not yet applied."""
        self.start = 0
        """The index of this leader's first entry (0: not the leader)."""
        self.ready = False
        """Deadlines are kept (see the module docstring)."""
        self.leases: Leases | None = None

    def elected(self, first_index: int) -> None:
        self.stop()
        self.start = first_index

    def stop(self) -> None:
        """No longer the leader: forget every deadline (the next leader starts them afresh)."""
        if self.leases is not None:
            self.leases.granted = self.leases.dropped = None
        self.deadlines.clear()
        self.heap.clear()
        self.expiring.clear()
        self.start = 0
        self.ready = False
        self.leases = None

    def promote(self, leases: Leases) -> None:
        """Every entry before this term's is applied: every lease gets its TTL again, and the extension."""
        now = self.clock()
        self.leases = leases
        leases.granted, leases.dropped = self._granted, self._dropped
        ext = self.extension_s
        self.deadlines = {i: now + ls.ttl_ms / 1000 + ext for i, ls in leases.table.items()}
        self.heap = [(d, i) for i, d in self.deadlines.items()]
        heapq.heapify(self.heap)
        self.ready = True

    def _granted(self, lease_id: int, ttl_ms: int) -> None:
        self._renew(lease_id, ttl_ms)

    def _dropped(self, lease_id: int) -> None:
        self.deadlines.pop(lease_id, None)
        self.expiring.discard(lease_id)

    def _renew(self, lease_id: int, ttl_ms: int) -> None:
        d = self.deadlines[lease_id] = self.clock() + ttl_ms / 1000
        heapq.heappush(self.heap, (d, lease_id))
        if len(self.heap) > 2 * len(self.deadlines) + 1024:  # renewals leave old entries behind: drop them
            self.heap = [(d, i) for i, d in self.deadlines.items()]
            heapq.heapify(self.heap)

    def keepalive(self, lease_id: int) -> dict[str, Any]:
        """The answer to a keepalive the leader has confirmed it may answer (its fields beside the id)."""
        leases = self.leases
        if not self.ready or leases is None:
            return {"ok": False, "error": "busy", "message": "a new leader is catching up its leases; retry"}
        lease = leases.table.get(lease_id)
        if lease is None or lease.solo or lease_id in self.expiring:
            return {"ok": False, "error": "no_lease", "message": f"lease {lease_id} expired or does not exist"}
        self._renew(lease_id, lease.ttl_ms)
        return {"ok": True, "lease": lease_id, "ttl_ms": lease.ttl_ms}

    def time_to_live(self, lease_id: int, key: bytes | None, found: bool = True) -> dict[str, Any]:
        """A lease's TTL and time left (of the lease ``key`` is attached to, if ``key``: ``found`` says whether the
        key exists; lease 0 if it has no lease)."""
        leases = self.leases
        if not self.ready or leases is None:
            return {"ok": False, "error": "busy", "message": "a new leader is catching up its leases; retry"}
        if key is not None:
            lease_id = leases.of_key.get(key, 0)
            if not lease_id:
                return {"ok": True, "lease": 0, "found": found}
        lease = leases.table.get(lease_id)
        d = self.deadlines.get(lease_id)
        if lease is None or d is None:
            return {"ok": False, "error": "no_lease", "message": f"lease {lease_id} expired or does not exist"}
        left = max(0, round((d - self.clock()) * 1000))
        return {"ok": True, "lease": lease_id, "ttl_ms": lease.ttl_ms, "remaining_ms": left,
                "keys": len(lease.keys), "found": True}

    def due(self) -> list[list[int]]:
        """The leases whose deadline passed, in batches (one expiry entry each), now marked expiring."""
        leases = self.leases
        if not self.ready or leases is None or not self.heap:
            return []
        now = self.clock()
        heap, deadlines, table = self.heap, self.deadlines, leases.table
        out: list[list[int]] = []
        batch: list[int] = []
        keys = 0
        while heap and heap[0][0] <= now and len(out) < EXPIRE_ENTRIES:
            d, lid = heapq.heappop(heap)
            if deadlines.get(lid) != d:
                continue
            del deadlines[lid]
            lease = table.get(lid)
            if lease is None:
                continue
            if batch and keys + len(lease.keys) > EXPIRE_KEYS:
                out.append(batch)
                batch, keys = [], 0
            self.expiring.add(lid)
            batch.append(lid)
            keys += len(lease.keys)
            if len(batch) >= EXPIRE_LEASES:
                out.append(batch)
                batch, keys = [], 0
        if batch:
            out.append(batch)
        return out
