"""A simulated client of transactions and compare-and-swap, as ``zraft.client.Client.txn`` and ``cas`` send them
(sessions, retries with the same sequence number, a new session after an unknown outcome: ``SimClient``'s).

Two workloads, on keys of their own:

- **list-append transactions** after Elle's: each appends unique elements (``<n>;``) to some of ``TXN_KEYS`` and
  reads others, in one transaction; the history goes to ``zraft.tools.txncheck``, which decides strict
  serializability and names any anomaly;
- **a compare-and-swap register** on ``REG_KEYS``: puts, linearizable gets, and cas (a transaction: the value
  equals the one expected, or the key is absent, then put), decided by the linearizability search
  (``zraft.tools.check``) with the other keys.
"""

from __future__ import annotations

import random
from typing import Any

from zraft.tools import check, txncheck

from .clients import SimClient
from .cluster import SimCluster, Violation

TXN_KEYS = ("x0", "x1", "x2", "x3")
REG_KEYS = ("r0", "r1")
FIRST_NUMBER = 2000
"""Transaction clients are numbered from here (their identities and history clients differ from the others')."""


class SimTxnClient(SimClient):
    def __init__(self, cluster: SimCluster, number: int, rng: random.Random, txns: list[txncheck.Txn],
                 history: list[check.Op]) -> None:
        super().__init__(cluster, FIRST_NUMBER + number, rng, REG_KEYS, history)
        self.txns = txns
        self.elements = 0
        self._mops: list[tuple[str, str, Any]] = []
        self._seen: dict[str, list[bytes]] = {k: [] for k in REG_KEYS}
        """Values each register was seen to hold: what a cas expects (so that some succeed)."""

    def _next(self) -> None:
        if self.stopped or self._req is not None:
            return
        self._rid += 1
        rng = self.rng
        session = {"client": self.client_id, "seq": self.seq + 1, "ack": self.seq + 1}
        if rng.random() < 0.6:
            self._mops = []
            then = []
            for _ in range(rng.randint(1, 4)):
                key = rng.choice(TXN_KEYS)
                if rng.random() < 0.5:
                    self.elements += 1
                    e = self.number * 1_000_000 + self.elements
                    self._mops.append(("append", key, e))
                    then.append(["append", key.encode(), b"%d;" % e])
                else:
                    self._mops.append(("r", key, None))
                    then.append(["get", key.encode()])
            self.seq += 1
            self._req = {"op": "txn", "id": self._rid, "if": [], "then": then, **session}
        else:
            key = rng.choice(REG_KEYS)
            kind = rng.choice(("cas", "cas", "put", "get"))
            self.elements += 1
            value = b"v%d-%d" % (self.number, self.elements)
            if kind == "get":
                self._req = {"op": "get", "id": self._rid, "key": key.encode()}
            elif kind == "put":
                self.seq += 1
                self._req = {"op": "put", "id": self._rid, "key": key.encode(), "value": value, **session}
            else:
                seen = self._seen[key][-3:]
                expect = rng.choice([*seen, None]) if seen else None
                cond = [key.encode(), "version", "=", 0] if expect is None else [key.encode(), "value", "=", expect]
                self.seq += 1
                self._req = {"op": "txn", "id": self._rid, "if": [cond], "then": [["put", key.encode(), value]],
                             "reg": key, "expect": expect, **session}
        self._call = self.c.now
        self._send()

    def _finish(self, r: dict[str, Any] | None, unknown: bool) -> None:
        req = self._req
        assert req is not None
        self._req = None
        self._attempt += 1
        ret = None if unknown else self.c.now
        if req["op"] == "txn" and "reg" not in req:
            self.txns.append(self._txn(r, unknown))
        elif req["op"] == "txn":  # a cas
            key = req["reg"]
            swapped = None if r is None else r.get("succeeded") is True
            if swapped:
                self._seen[key].append(req["then"][0][2])
            self.history.append(check.Op(self.number, "cas", key, req["then"][0][2], None, self._call, ret,
                                         expect=req["expect"], swapped=swapped))
        elif req["op"] == "put":
            self._seen[req["key"].decode()].append(req["value"])
            self.history.append(check.Op(self.number, "put", req["key"].decode(), req["value"], None, self._call,
                                         ret))
        elif r is not None:
            value = r.get("value")
            if value is not None:
                self._seen[req["key"].decode()].append(value)
            self.history.append(check.Op(self.number, "get", req["key"].decode(), None, value, self._call, ret))
        if unknown and req["op"] != "get":
            self._new_session()  # as the real client: a session with an unknown write is not reused
        if not self.stopped:
            self.c.at(self.rng.uniform(5, 60), self._next)

    def _txn(self, r: dict[str, Any] | None, unknown: bool) -> txncheck.Txn:
        """The list-append transaction just finished, as the checker reads it."""
        if r is None or unknown:
            return txncheck.Txn(self.number, self._call, None, txncheck.INFO,
                                tuple((f, k, None if f == "r" else v) for f, k, v in self._mops))
        results = r.get("results")
        if r.get("succeeded") is not True or type(results) is not list or len(results) != len(self._mops):
            raise Violation(f"transaction client {self.number}: a malformed answer {r!r:.200}")
        ops = []
        for (f, k, v), res in zip(self._mops, results, strict=True):
            if f == "r":
                value = b"" if res is None else res[0]
                v = tuple(int(e) for e in value.split(b";")[:-1])
            ops.append((f, k, v))
        return txncheck.Txn(self.number, self._call, self.c.now, txncheck.OK, tuple(ops))


def check_txns(c: SimCluster, txns: list[txncheck.Txn]) -> None:
    """The transactions were strictly serializable, and every acknowledged append is in its key's final value
    exactly once."""
    result = txncheck.check(txns)
    if not result.ok:
        raise Violation(f"transactions: {result.summary()}")
    ld = c.leader()
    store = c.nodes[ld].kv if ld is not None else None
    assert store is not None
    for key in TXN_KEYS:
        elements = (store.get(key.encode()) or b"").split(b";")[:-1]
        if len(set(elements)) != len(elements):
            raise Violation(f"a transaction's append was applied twice to {key!r}")
        have = set(elements)
        for t in txns:
            if t.status == txncheck.OK:
                for f, k, v in t.ops:
                    if f == "append" and k == key and b"%d" % v not in have:
                        raise Violation(f"acknowledged transaction append {v} to {key!r} is missing at the end")
