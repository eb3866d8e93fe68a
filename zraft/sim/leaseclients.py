"""A simulated lease holder, as ``zraft.client.Client``'s ``grant``, ``put(lease=...)`` and ``keepalive`` send them:
it grants a lease, attaches a key to it, keeps it alive a while, then stops and lets it expire, and starts over.

What it checks (``check_leases``): no lease is expired while its holder was promised it -- a grant or keepalive
acknowledged at time t (the time its first attempt was sent) promises the lease until t + TTL, less the margin for
the nodes' clocks running apart (``zraft.server.lessor.CLOCK_DRIFT``). The seeds that run these clients give each
node a clock that runs fast or slow by up to that much (``SimCluster.drift``); the expiries come from the log,
whichever node applied one first."""

from __future__ import annotations

import random
from typing import Any

from zraft.server.lessor import CLOCK_DRIFT, safe_for

from .clients import SimClient
from .cluster import SimCluster, Violation

FIRST_NUMBER = 3000
"""Lease clients are numbered from here (their identities differ from the other clients')."""


class SimLeaseClient(SimClient):
    def __init__(self, cluster: SimCluster, number: int, rng: random.Random) -> None:
        super().__init__(cluster, FIRST_NUMBER + number, rng, (), [])
        self.lease = 0
        self.ttl = 0
        self.keepalives_left = 0
        self.acked = 0
        """Grants and keepalives acknowledged."""

    def _next(self) -> None:
        if self.stopped or self._req is not None:
            return
        self._rid += 1
        session = {"client": self.client_id, "seq": self.seq + 1, "ack": self.seq + 1}
        if not self.lease:
            self.ttl = self.rng.choice((2000, 2500, 3000, 4000))
            self.seq += 1
            self._req = {"op": "lease_grant", "id": self._rid, "ttl_ms": self.ttl, **session}
        elif self.keepalives_left == -1:
            self.seq += 1
            self._req = {"op": "put", "id": self._rid, "key": b"lease-%d" % self.number, "value": b"held",
                         "lease": self.lease, **session}
        else:
            self._req = {"op": "lease_keepalive", "id": self._rid, "lease": self.lease}
        self._call = self.c.now
        self._send()

    def on_reply(self, node: int, r: dict[str, Any]) -> None:
        req = self._req
        if req is None or r["id"] != req["id"] or r["ok"] or r.get("error") != "no_lease":
            super().on_reply(node, r)
            return
        # The lease is gone (expired once this client stopped keeping it alive, or before: then the check at the
        # end says so). Start over.
        self._req = None
        self._attempt += 1
        self.lease = 0
        self._again(self.rng.uniform(5, 60))

    def _finish(self, r: dict[str, Any] | None, unknown: bool) -> None:
        req = self._req
        assert req is not None
        self._req = None
        self._attempt += 1
        if unknown:
            if req["op"] != "lease_keepalive":
                self._new_session()
            self.lease = 0  # a lease granted or not: this client gives it up (it expires, unkept)
            self._again(self.rng.uniform(5, 60))
            return
        assert r is not None
        c = self.c
        if req["op"] == "lease_grant":
            lease = r.get("lease")
            if type(lease) is not int or lease <= 0 or r.get("ttl_ms") != self.ttl:
                raise Violation(f"lease client {self.number}: a malformed grant answer {r!r:.200}")
            self.lease = lease
            self.keepalives_left = -1  # attach the key first
            c.lease_ttl[lease] = self.ttl
        elif req["op"] == "put":
            self.keepalives_left = self.rng.randint(0, 12)
        else:
            if r.get("ttl_ms") != self.ttl or r.get("lease") != self.lease:
                raise Violation(f"lease client {self.number}: a malformed keepalive answer {r!r:.200}")
            self.keepalives_left -= 1
        if req["op"] != "put":
            self.acked += 1
            promise = self._call + self.ttl
            if promise > c.lease_promised.get(self.lease, (0.0, 0.0))[0]:
                c.lease_promised[self.lease] = (promise, self._call)
        if self.keepalives_left == 0 and req["op"] != "lease_grant":
            self.lease = 0  # stop keeping it alive: it expires; a new one is granted after a while
            self._again(self.ttl + self.rng.uniform(0, 1500))
        elif self.keepalives_left >= 0 and self.rng.random() < 0.25:
            # Late: about when the leader's deadline passes. A keepalive that arrives while the leader is expiring
            # the lease must be refused (no_lease), never acknowledged.
            self._again(max(1.0, self._call + self.ttl * self.rng.uniform(0.97, 1.03) - c.now))
        else:
            self._again(self.ttl / self.rng.choice((3, 4, 5)) if self.keepalives_left >= 0 else 1.0)

    def _again(self, delay: float) -> None:
        if not self.stopped:
            self.c.at(delay, self._next)


def check_leases(c: SimCluster) -> None:
    """No lease was expired (an expiry entry applied by some node) before its last promise, less the margin."""
    for lease, (at, why) in sorted(c.lease_expired.items()):
        promised = c.lease_promised.get(lease)
        if promised is None:
            continue
        _, sent = promised
        ttl = c.lease_ttl[lease]
        if at < sent + safe_for(ttl / 1000) * 1000:
            safe = sent + safe_for(ttl / 1000) * 1000
            raise Violation(f"lease {lease} (TTL {ttl} ms) expired at t={at:.1f} ({why}), but a keepalive sent at "
                            f"t={sent:.1f} was acknowledged: it was safe until t={safe:.1f} (the TTL less "
                            f"{2 * CLOCK_DRIFT:.0%} for clock drift)")

