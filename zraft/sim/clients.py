"""Simulated clients that behave as ``zraft.client.Client`` does, over the simulated network: one session each
(a client id, a sequence number per write, ``ack`` = the lowest unfinished one), the same request maps and
reply checks, a leader hint followed on ``not_leader``, the same request retried on timeouts and errors until a
deadline, and then "outcome unknown" and a new session. Every operation goes into a history that
``zraft.tools.check`` decides at the end of the seed.

Writes are appends of distinct elements (``<client>-<n>;``) so that each key's history is decided by the
list-append check, and exactly-once can be checked on the final value: an append retried by a client must appear
once.
"""

from __future__ import annotations

import random
from typing import Any

from zraft.tools import check
from zraft.transport.codec import Err

from .cluster import SimCluster, Violation

ATTEMPT_MS = 1000.0
"""How long one attempt waits for its answer (``zraft.client.ATTEMPT_TIMEOUT``)."""
DEADLINE_MS = 6000.0
"""How long a request is retried before its outcome is given up as unknown."""
BACKOFF_MS = (20.0, 100.0)


def _refused(c: SimCluster, who: str, r: dict[str, Any]) -> tuple[bool, int | None, bool]:
    """What a client does with a refusal, as ``zraft.client.Client`` does: (the session expired: the outcome is
    unknown; the leader to try next, if the answer named a node; try it at once). A well-formed request refused
    as malformed or too large is a violation."""
    err = r.get("error", "")
    if err in (Err.TOO_LARGE, Err.BAD_REQUEST, Err.BAD_COMMAND):
        raise Violation(f"{who}: a well-formed request was refused: {r}")
    if err == Err.BUSY:
        c.cov["busy_refusals"] += 1
    hint = r.get("leader", 0)
    leader = hint if hint in c.nodes else None
    return err == Err.SESSION_EXPIRED, leader, err == Err.NOT_LEADER and leader is not None


class SimClient:
    def __init__(self, cluster: SimCluster, number: int, rng: random.Random, keys: tuple[str, ...],
                 history: list[check.Op]) -> None:
        self.c = cluster
        self.number = number
        self.rng = rng
        self.keys = keys
        self.history = history
        self.identity = f"client-{number}".encode()
        cluster.clients[self.identity] = self.on_reply
        self.nodes = sorted(cluster.nodes)
        self.leader: int | None = None
        self.stopped = False
        self.sessions = 0
        self.appended = 0
        self._new_session()
        self._rid = 0
        self._req: dict[str, Any] | None = None
        self._call = 0.0
        self._attempt = 0
        self._element = b""

    def _new_session(self) -> None:
        self.client_id = self.rng.randrange(1, 1 << 62)
        self.seq = 0
        self.sessions += 1

    @property
    def busy(self) -> bool:
        return self._req is not None

    def start(self, delay: float) -> None:
        self.c.at(delay, self._next)

    def _next(self) -> None:
        if self.stopped or self._req is not None:
            return
        self._rid += 1
        key = self.rng.choice(self.keys)
        if self.rng.random() < 0.6:
            self.seq += 1
            self.appended += 1
            self._element = f"{self.number}-{self.appended};".encode()
            self._req = {"op": "append", "id": self._rid, "key": key.encode(), "value": self._element,
                         "client": self.client_id, "seq": self.seq, "ack": self.seq}
        else:
            self._req = {"op": "get", "id": self._rid, "key": key.encode()}
        self._call = self.c.now
        self._send()

    def _send(self, rid: int | None = None) -> None:
        req = self._req
        if req is None or (rid is not None and req["id"] != rid):
            return  # the request this retry was for is over
        target = self.leader if self.leader is not None else self.rng.choice(self.nodes)
        self._attempt += 1
        attempt = self._attempt
        self.c.send_to_node(self.identity, target, req)
        self.c.at(ATTEMPT_MS, lambda: self._timeout(attempt))

    def _timeout(self, attempt: int) -> None:
        if attempt != self._attempt or self._req is None:
            return
        self.leader = None
        self._retry()

    def _retry(self, at_once: bool = False) -> None:
        if self.c.now - self._call >= DEADLINE_MS:
            self._finish(None, unknown=True)
            return
        if at_once:
            self._send()
            return
        self._attempt += 1  # no answer to the old attempt is awaited any more
        rid = self._req["id"] if self._req is not None else 0
        self.c.at(self.rng.uniform(*BACKOFF_MS), lambda: self._send(rid))

    def on_reply(self, node: int, r: dict[str, Any]) -> None:
        req = self._req
        if req is None or r["id"] != req["id"]:
            return  # an answer to an attempt given up on
        if r["ok"]:
            self.leader = node
            self._finish(r, unknown=False)
            return
        expired, leader, at_once = _refused(self.c, f"client {self.number}", r)
        if expired:
            self._finish(None, unknown=True)
        else:
            self.leader = leader
            self._retry(at_once=at_once)

    def _finish(self, r: dict[str, Any] | None, unknown: bool) -> None:
        req = self._req
        assert req is not None
        self._req = None
        self._attempt += 1
        key = req["key"].decode()
        ret = None if unknown else self.c.now
        if req["op"] == "append":
            self.history.append(check.Op(self.number, "append", key, req["value"], None, self._call, ret))
            if unknown:
                self._new_session()  # as the real client: a session with an unknown write is not reused
        elif not unknown:
            assert r is not None
            self.history.append(check.Op(self.number, "get", key, None, r.get("value"), self._call, ret))
        if not self.stopped:
            self.c.at(self.rng.uniform(5, 60), self._next)


class SimPipeClient:
    """A client with ``window`` appends in flight in one session, as ``Client.closed_loop`` and the Redis server's
    pipelines keep them: ``ack`` is its lowest unanswered sequence number, so the session trims the answers below
    it while retries of the oldest ones come and go -- what exactly-once must survive with 64 or more in flight.
    Each request is retried like ``SimClient``'s; one whose outcome is unknown ends the session once the others
    are answered (a new one starts)."""

    def __init__(self, cluster: SimCluster, number: int, rng: random.Random, keys: tuple[str, ...],
                 history: list[check.Op], window: int, budget: int) -> None:
        self.c = cluster
        self.number = number
        self.rng = rng
        self.keys = keys
        self.history = history
        self.window = window
        self.budget = budget
        """Appends to issue in all (bounds what a seed costs)."""
        self.identity = f"pipe-{number}".encode()
        cluster.clients[self.identity] = self.on_reply
        self.nodes = sorted(cluster.nodes)
        self.leader: int | None = None
        self.stopped = False
        self.sessions = 0
        self.issued = 0
        self.acked = 0
        self._rid = 0
        self.inflight: dict[int, dict[str, Any]] = {}
        """Request id -> {"req", "seq", "call", "attempt"}."""
        self.poisoned = False
        self._last_ack = 0
        self._new_session()

    def _new_session(self) -> None:
        self.client_id = self.rng.randrange(1, 1 << 62)
        self.seq = 0
        self.sessions += 1
        self.poisoned = False
        self._last_ack = 0

    @property
    def busy(self) -> bool:
        return bool(self.inflight)

    def start(self, delay: float) -> None:
        self.c.at(delay, self._fill)

    def _fill(self) -> None:
        while (not self.stopped and not self.poisoned and len(self.inflight) < self.window
               and self.issued < self.budget):
            self._issue()

    def _issue(self) -> None:
        self._rid += 1
        self.seq += 1
        self.issued += 1
        rid = self._rid
        ack = min([st["seq"] for st in self.inflight.values()] + [self.seq])
        req = {"op": "append", "id": rid, "key": self.rng.choice(self.keys).encode(),
               "value": f"p{self.number}-{self.issued};".encode(), "client": self.client_id, "seq": self.seq,
               "ack": ack}
        self.inflight[rid] = {"req": req, "seq": self.seq, "call": self.c.now, "attempt": 0}
        self._send(rid)
        if ack > self._last_ack:
            self._last_ack = ack
            oldest = next((r for r, st in self.inflight.items() if st["seq"] == ack), None)
            if oldest is not None and oldest != rid and self.rng.random() < 0.5:
                # A retry of the oldest request (its answer lost, say) right behind the request that moved ack
                # to it: the session may have just trimmed the answers below ack, and must still know this one.
                self.c.send_to_node(self.identity, self.leader if self.leader is not None else
                                    self.rng.choice(self.nodes), self.inflight[oldest]["req"])

    def _send(self, rid: int) -> None:
        st = self.inflight.get(rid)
        if st is None:
            return
        target = self.leader if self.leader is not None else self.rng.choice(self.nodes)
        st["attempt"] += 1
        attempt = st["attempt"]
        self.c.send_to_node(self.identity, target, st["req"])
        self.c.at(ATTEMPT_MS, lambda: self._timeout(rid, attempt))

    def _timeout(self, rid: int, attempt: int) -> None:
        st = self.inflight.get(rid)
        if st is None or st["attempt"] != attempt:
            return
        self.leader = None
        self._retry(rid)

    def _retry(self, rid: int, at_once: bool = False) -> None:
        st = self.inflight.get(rid)
        if st is None:
            return
        if self.c.now - st["call"] >= DEADLINE_MS:
            self._finish(rid, unknown=True)
            return
        if at_once:
            self._send(rid)
            return
        st["attempt"] += 1  # no answer to the old attempt is awaited any more
        self.c.at(self.rng.uniform(*BACKOFF_MS), lambda: self._send(rid))

    def on_reply(self, node: int, r: dict[str, Any]) -> None:
        rid = r.get("id")
        if rid not in self.inflight:
            return  # answered already (a duplicate, or an answer to an earlier attempt)
        if r["ok"]:
            self.leader = node
            seq = self.inflight[rid]["seq"]
            self._finish(rid, unknown=False)
            # Answers come in the order the writes were applied: an older write still unanswered was applied too,
            # and its answer lost. Ask again now (once per attempt), not after the attempt's timeout; it must be
            # answered from the session, whatever the session forgot meanwhile.
            for older, st in list(self.inflight.items()):
                if st["seq"] < seq and st.get("early") != st["attempt"]:
                    self._send(older)
                    st["early"] = st["attempt"]
            return
        expired, leader, at_once = _refused(self.c, f"pipelined client {self.number}", r)
        if expired:
            self._finish(rid, unknown=True)
        else:
            self.leader = leader
            self._retry(rid, at_once=at_once)

    def _finish(self, rid: int, unknown: bool) -> None:
        st = self.inflight.pop(rid)
        req = st["req"]
        self.history.append(check.Op(1000 + self.number, "append", req["key"].decode(), req["value"], None,
                                     st["call"], None if unknown else self.c.now))
        if unknown:
            self.poisoned = True  # no new request in this session: its outcome can no longer be told apart
        else:
            self.acked += 1
        if self.poisoned and not self.inflight:
            self._new_session()
        if not self.stopped:
            self.c.at(self.rng.uniform(1, 5), self._fill)
