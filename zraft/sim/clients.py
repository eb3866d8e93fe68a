"""Simulated clients that behave as ``zraft.client.Client`` does, over the simulated network: one session each
(a client id, a sequence number per write, ``ack`` = the lowest unfinished one), the same request maps and
reply checks, a leader hint followed on ``not_leader``, the same request retried on timeouts and errors until a
deadline, and then "outcome unknown" and a new session. Every operation goes into a history that
``zraft.check`` decides at the end of the seed.

Writes are appends of distinct elements (``<client>-<n>;``) so that each key's history is decided by the
list-append check, and exactly-once can be checked on the final value: an append retried by a client must appear
once.
"""

from __future__ import annotations

import random
from typing import Any

from zraft import check
from zraft.transport.codec import Err

from .cluster import SimCluster, Violation

ATTEMPT_MS = 1000.0
"""How long one attempt waits for its answer (``zraft.client.ATTEMPT_TIMEOUT``)."""
DEADLINE_MS = 6000.0
"""How long a request is retried before its outcome is given up as unknown."""
BACKOFF_MS = (20.0, 100.0)


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
        err = r.get("error", "")
        if err in (Err.TOO_LARGE, Err.BAD_REQUEST, Err.BAD_COMMAND):
            raise Violation(f"client {self.number}: a well-formed request was refused: {r}")
        if err == Err.SESSION_EXPIRED:
            self._finish(None, unknown=True)
            return
        hint = r.get("leader", 0)
        self.leader = hint if hint in self.c.nodes else None
        self._retry(at_once=err == Err.NOT_LEADER and self.leader is not None)

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
