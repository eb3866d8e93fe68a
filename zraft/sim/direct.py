"""Requests made straight into a node's replica, without a client or network delay: the tests' writes and reads,
each seed's final write, and the nemesis's membership changes. A write appends a fresh op id to a key; a read
must see every op acknowledged before it (else ``Violation``).

A part of ``SimCluster`` (``cluster.py``): its methods run on the one cluster object; what they use of the rest
is declared at the top of ``DirectRequests``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zraft.transport import requests
from zraft.transport.codec import Err

from .checks import Violation
from .node import SimNode


@dataclass
class DirectRequest:
    """A request made through ``client_write``/``client_read`` (tests and the final write of a seed)."""

    node: int
    kind: str
    key: str
    op: str = ""
    required: tuple[str, ...] = ()
    start: float = 0.0


class DirectRequests:
    nodes: dict[int, SimNode]
    now: float
    stats: dict[str, int]
    _next_id: int
    _direct: dict[int, DirectRequest]
    _refused: dict[int, int]
    """Request id -> the leader a refusal named."""
    acked: dict[str, list[str]]
    """Key -> op ids acknowledged, in ack order."""
    acked_ops: set[str]
    last_direct_op: str
    read_results: list[tuple[str, tuple[str, ...]]]
    addresses: dict[int, str]
    cov: collections.Counter[str]
    last_heard: dict[tuple[int, int], float]
    lead_since: dict[int, float]
    membership: dict[str, int]
    """Membership changes and transfers the leader accepted, by kind (``membership_refused``: refused)."""
    membership_acked: dict[str, int]
    membership_refused: int
    _member_reqs: dict[int, str]

    def _feed_now(self, node: SimNode, kind: str, msg: Any, identity: bytes) -> None:
        raise NotImplementedError  # cluster.py

    def leader(self) -> int | None:
        raise NotImplementedError  # cluster.py

    def run_until(self, cond: Callable[[], bool], max_ms: float) -> bool:
        raise NotImplementedError  # cluster.py

    def note(self, text: str) -> None:
        raise NotImplementedError  # cluster.py

    def _start(self, node: SimNode) -> None:
        raise NotImplementedError  # cluster.py

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def client_write(self, client: int, node_id: int, key: str) -> tuple[bool, int]:
        """Ask ``node_id`` to append a fresh op id to ``key`` (a request of its own session, answered without
        network delay). Returns (accepted, leader hint): not accepted when the node is down or not the leader."""
        node = self.nodes[node_id]
        rep = node.replica
        if not node.up or rep is None:
            return False, 0
        rid = self._new_id()
        op = self.last_direct_op = f"{client}.{rid}"
        self._direct[rid] = DirectRequest(node_id, "append", key, op, start=self.now)
        req = requests.Append(rid, (1 << 40) + rid, 1, 1, key.encode(), f"{op};".encode())
        self._feed_now(node, "client", req, b"direct")
        if rid in self._direct:
            return True, node_id
        return False, self._refused.pop(rid, 0)

    def client_read(self, client: int, node_id: int, key: str) -> bool:
        """A linearizable read of ``key`` at ``node_id``; its result must hold every op acknowledged before."""
        node = self.nodes[node_id]
        rep = node.replica
        if not node.up or rep is None:
            return False
        rid = self._new_id()
        self._direct[rid] = DirectRequest(node_id, "get", key, required=tuple(self.acked.get(key, ())),
                                          start=self.now)
        self._feed_now(node, "client", requests.Get(rid, key.encode()), b"direct")
        return True

    def _direct_reply(self, node_id: int, reply: dict[str, Any]) -> None:
        d = self._direct.pop(reply["id"], None)
        if d is None:
            return
        if not reply["ok"]:
            if reply.get("error") == Err.NOT_LEADER:
                self.stats["not_leader"] += 1
                self._refused[reply["id"]] = reply.get("leader", 0)
            self._direct_failed(d)
            return
        if d.kind == "append":
            self.stats["writes_ok"] += 1
            self.acked.setdefault(d.key, []).append(d.op)
            self.acked_ops.add(d.op)
            return
        value = reply.get("value") or b""
        ops = tuple(value.decode().split(";")[:-1])
        missing = set(d.required) - set(ops)
        if missing:
            raise Violation(f"stale read of {d.key!r} on node {node_id}: missing acknowledged {sorted(missing)}")
        self.stats["reads_ok"] += 1
        self.read_results.append((d.key, ops))

    def _direct_failed(self, d: DirectRequest) -> None:
        self.stats["writes_unknown" if d.kind == "append" else "reads_failed"] += 1

    @property
    def pending_direct(self) -> int:
        return len(self._direct)

    def write(self, key: str, max_ms: float = 3000.0, client: int = 0) -> str | None:
        """Append a fresh op id to ``key`` through the current leader and wait for the acknowledgement.
        Returns the op id, or None if there was no leader or it was not acknowledged in time."""
        ld = self.leader()
        if ld is None:
            return None
        before = len(self.acked.get(key, ()))
        ok, _ = self.client_write(client, ld, key)
        if not ok or not self.run_until(lambda: len(self.acked.get(key, ())) > before, max_ms):
            return None
        return self.acked[key][before]

    def expire_clients(self, timeout_ms: float) -> None:
        """Give up on direct requests older than ``timeout_ms`` (their outcome stays unknown)."""
        old = self.now - timeout_ms
        for rid in [rid for rid, d in self._direct.items() if d.start < old]:
            self._direct_failed(self._direct.pop(rid))

    def read_now(self, node_id: int) -> None:
        self.client_read(7, node_id, "f8")

    # ------------------------------------------------------------------ membership changes

    def change_membership(self, kind: str, target: int) -> bool:
        """Ask the leader, with a client request through the codec, for one change: ``add_learner`` (a spare,
        started now if it never was), ``promote``, ``remove`` (voter or learner, the leader itself included) or
        ``transfer`` (leadership to ``target``). Returns whether the leader took it (it refuses what the core's
        rules forbid: see zraft.core.raft); its answer comes when the change commits."""
        ld = self.leader()
        if ld is None:
            return False
        node = self.nodes[ld]
        rep = node.replica
        assert rep is not None
        if kind == "add_learner" and not self.nodes[target].started:
            self.note(f"start spare node {target} (no configuration)")
            self._start(self.nodes[target])
        rid = self._new_id()
        msg: requests.MemberChange = (requests.AddLearner(rid, target, self.addresses[target])
                                      if kind == "add_learner" else requests.KINDS[kind](rid, target))
        self._member_reqs[rid] = kind
        refused_before = self.membership_refused
        self._feed_now(node, "client", msg, b"members")
        accepted = self.membership_refused == refused_before
        if kind == "promote":
            heard = self.last_heard.get((ld, target), -1.0) >= self.lead_since.get(ld, 0.0)
            if not heard:
                self.cov["promote_unheard"] += 1
                if accepted:
                    raise Violation(f"leader {ld} promoted learner {target}, which has not answered it in its term")
        if accepted:
            self.membership[kind] = self.membership.get(kind, 0) + 1
            self.note(f"leader {ld} takes {kind} {target}")
        return accepted

    def _member_reply(self, node_id: int, reply: dict[str, Any]) -> None:
        kind = self._member_reqs.pop(reply["id"], None)
        if kind is None:
            return
        if reply["ok"]:
            self.membership_acked[kind] = self.membership_acked.get(kind, 0) + 1
            self.note(f"node {node_id} answers {kind}: done")
        elif reply.get("error") in (Err.BUSY, Err.NOT_CAUGHT_UP, Err.CONFIG_REFUSED, Err.NOT_LEADER):
            self.membership_refused += 1
            self.note(f"node {node_id} refuses {kind}: {reply.get('message')}")
        else:
            self.note(f"node {node_id} answers {kind}: {reply.get('error')} ({reply.get('message')})")
